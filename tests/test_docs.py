"""The README's layout section names the tree as it is: every top-level module and folder of lab/,
every module of the folders that follow a run, and nothing that is not there."""

from __future__ import annotations

import re

from tests.conftest import ROOT

FLOW = ("config", "train", "runs", "results")  # each of their modules is named


def layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1]
    return section.split("```", 2)[1]


def named_paths(block: str) -> set[str]:
    """Paths the block names: `lab/x.py`, `lab/x/` at a line's start or anywhere, and `name.py` on the
    lines of the folder entry above them."""
    paths, folder = set(), ""
    for line in block.splitlines():
        head = line.split(" ", 1)[0]
        if head.endswith("/") and head.startswith(("lab/", "conf/")):
            folder = head
        elif head.startswith("lab/"):
            folder = ""
        for token in re.findall(r"[\w./]+\.py|lab/[\w/]+/", line):
            paths.add(token if "/" in token else folder + token)
    return paths


def test_every_path_the_layout_names_exists():
    missing = sorted(p for p in named_paths(layout_block()) if not (ROOT / p).exists())
    assert missing == [], missing


def test_the_layout_names_every_part_of_lab():
    named = named_paths(layout_block())
    top = {f"lab/{p.name}" + ("/" if p.is_dir() else "") for p in (ROOT / "lab").iterdir()
           if p.name not in ("__init__.py", "__pycache__", "conf")}
    flow = {f"lab/{folder}/{p.name}" for folder in FLOW for p in (ROOT / "lab" / folder).glob("*.py")
            if p.name != "__init__.py"}
    assert sorted((top | flow) - named) == []


def test_the_check_sees_a_missing_entry():
    block = layout_block().replace("lab/errors.py", "lab/oops.py")
    assert "lab/oops.py" in named_paths(block) and not (ROOT / "lab/oops.py").exists()


def test_no_module_is_much_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "lab").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}
