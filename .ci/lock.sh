#!/usr/bin/env bash
# `make lock`: rewrites requirements.lock, every package lab's environment holds (runtime and the
# dev extra, torch and torchvision included, lab itself not), resolved afresh from pyproject.toml
# in a throwaway venv. The lock is for Python 3.11 on Linux x86_64; elsewhere this refuses.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-2.14.1}              # the builds this project is tested with; never newer
TORCHVISION=${TORCHVISION:-0.29.1}
PIP_FLAGS=(--disable-pip-version-check --progress-bar off -q)

"$PYTHON" -c 'import platform, sys; sys.exit(not (sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64"
              and sys.platform == "linux"))' \
  || { echo "lock.sh: requirements.lock is for Python 3.11 on Linux x86_64; $PYTHON is not" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install "${PIP_FLAGS[@]}" "torch==$TORCH" "torchvision==$TORCHVISION" -e '.[dev]' \
  --config-settings editable_mode=compat
"$py" -m pip check

# --all keeps pip, setuptools and wheel (the dev extra declares the last two); names are
# written lower-case with '-' (PEP 503), sorted by name, one `name==version` a line.
{
  cat <<EOF
# requirements.lock: the exact environment of lab (runtime and the dev extra, torch and
# torchvision included, lab itself excluded) for Python 3.11 on Linux x86_64.
# Made by \`make lock\` (.ci/lock.sh): a throwaway venv, then
#   pip install torch==$TORCH torchvision==$TORCHVISION -e '.[dev]'
#   pip freeze --all --exclude-editable --exclude lab
# Regenerate with \`make lock\` after editing pyproject.toml (docs/dependencies.md);
# \`make install\` installs exactly this file. tests/test_dependencies.py checks it.
EOF
  "$py" -m pip freeze --all --exclude-editable --exclude lab | "$py" -c '
import re, sys
pins = {}
for line in sys.stdin:
    name, sep, version = line.strip().partition("==")
    if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not re.fullmatch(r"[A-Za-z0-9.+!_-]+", version):
        sys.exit(f"lock.sh: not a name==version line: {line.strip()!r}")
    pins[re.sub(r"[-_.]+", "-", name).lower()] = version
print("".join(f"{name}=={pins[name]}\n" for name in sorted(pins)), end="")
'
} > "$tmp/requirements.lock"
mv "$tmp/requirements.lock" requirements.lock
echo "requirements.lock: $(grep -vc '^#' requirements.lock) packages"
