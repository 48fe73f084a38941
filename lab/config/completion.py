"""Tab completion for `python -m lab.run ...` in bash (and zsh through bashcompinit).

Hydra's own install script completes `python script.py` or an installed app, not
`python -m module`: it looks for a file named `-m`. This script recognises
`python -m lab.run|lab.eval|lab.predict`, and asks Hydra's completion query (the
config groups, options and keys) with the line rewritten to the form Hydra parses.

    eval "$(python -m lab.run --shell-completion install=bash)"
"""

from __future__ import annotations

BASH = r"""_lab_completion()
{
    local line="${COMP_LINE:0:$COMP_POINT}"
    local words=($line)
    if [[ "${words[1]}" != "-m" || ! "${words[2]}" =~ ^lab\.(run|eval|predict)$ ]]; then
        return 1
    fi
    local rest="${line#*${words[2]}}"
    local cur="${COMP_WORDS[COMP_CWORD]}"
    [[ "$line" =~ [[:space:]]$ ]] && cur=""
    local choices
    choices=$(COMP_LINE="python ${words[2]}${rest}" COMP_POINT=0 "${words[0]}" -m lab.run -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -W "$choices" -- "${line##*[[:space:]]}"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _lab_completion python python3
"""

UNINSTALL = "complete -r python python3 2>/dev/null; unset -f _lab_completion\n"


def handle(argv: list[str]) -> str | None:
    """The script to print for `--shell-completion install=bash|uninstall=bash`, or None
    (a `query=` or another shell: Hydra answers)."""
    if not any(a in ("--shell-completion", "-sc") for a in argv):
        return None
    if "install=bash" in argv or "install=zsh" in argv:
        prefix = "autoload -U +X bashcompinit && bashcompinit\n" if "install=zsh" in argv else ""
        return prefix + BASH
    if "uninstall=bash" in argv or "uninstall=zsh" in argv:
        return UNINSTALL
    return None
