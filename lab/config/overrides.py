"""Command-line overrides: the one place that quotes a value for Hydra and reads a token back.

Hydra's override grammar reads `cos(x)` as a call to one of its functions, `a,b` as a sweep
and `'...'` as a quoted string, so a path or a formula passed on must be quoted the way its
parser reads back verbatim. No torch at import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# Unquoted, these characters read back as themselves in a Hydra override value.
_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_/.\-+@]*")
# Keys whose values are formulas (lab.data.expression): Hydra would read `cos(x)` as a function call.
FORMULA_KEYS = ("data.expr",)
# Keys whose values are checkpoint paths: a best checkpoint's name holds '=' (epoch005-val_top1=0.9926.ckpt),
# which Hydra's grammar refuses unquoted. Quoted only when they hold one, so a sweep (a,b) still sweeps.
PATH_KEYS = ("init_from",)


def quote(value: str | Path) -> str:
    """`value` as a Hydra override value that its parser reads back verbatim: as it is when
    plain, else in single quotes (a backslash before a quote, or ending the text, is doubled;
    quotes are escaped)."""
    text = str(value)
    if _PLAIN.fullmatch(text) and text not in ("null", "true", "false"):
        return text
    # In a quoted Hydra value, only backslashes that precede a quote or end the string are escapes.
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text).replace("'", "\\'")
    return f"'{escaped}'"


def key_of(token: str) -> str:
    """The key of `key=value`, without Hydra's `+`, `++` or `~` prefix."""
    return token.lstrip("+~").split("=", 1)[0]


def value_of(token: str) -> str:
    """The value of `key=value`, unquoted when the whole value is one quoted string."""
    raw = token.split("=", 1)[1] if "=" in token else ""
    if len(raw) > 1 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    return raw


def quote_verbatim(args: Iterable[str]) -> list[str]:
    """`data.expr=<formula>`, and `init_from=<path>` holding '=', quoted for Hydra (a value already
    quoted is kept)."""
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if sep and value and not (len(value) > 1 and value[0] == value[-1] and value[0] in "'\"") and (
            key in FORMULA_KEYS or (key in PATH_KEYS and "=" in value)
        ):
            arg = f"{arg[:len(arg) - len(value) - 1]}={quote(value)}"
        quoted.append(arg)
    return quoted
