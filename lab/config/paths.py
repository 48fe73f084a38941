"""Where lab finds its configs, from a clone or from an installed package."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # lab/


def config_dir() -> str:
    """The folder holding config.yaml.

    An installed (non-editable) lab ships conf/ inside the package as lab/conf; a
    clone or an editable install reads the top-level conf/ next to lab/.
    """
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"lab's config folder is missing: looked for config.yaml in {_PACKAGE_DIR / 'conf'} "
        f"and {_PACKAGE_DIR.parent / 'conf'}; reinstall lab (pip install .) or run from a clone."
    )
