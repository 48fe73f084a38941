"""Dependencies you can trust: requirements.lock, pyproject.toml, the imports and the installed venv agree.

Each check is a function of texts (or of a source tree), so each is also run on a doctored copy
to prove that it can fail. No network, no pip: the lock is made by `make lock` (docs/dependencies.md).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"

# GHSA-w37p-236h-pfx3: lightning 2.6.2 and 2.6.3 on PyPI were malicious uploads.
# CVE-2026-58659 / GHSA-qqmf-gpg7-g8gw: every release up to 2.6.5, fixed in 2.6.6.
MALICIOUS_LIGHTNING = {Version("2.6.2"), Version("2.6.3")}
FIRST_FIXED_LIGHTNING = Version("2.6.6")
LIGHTNING_DISTS = ("lightning", "pytorch-lightning")  # the same code, shipped under both names

RUNTIME_DIRS = ("lab",)  # imports here must be in [project] dependencies
DEV_DIRS = ("tests", "bench")  # imports here may also come from the dev extra


# ---------------------------------------------------------------- parsing


def parse_lock(lock_text: str) -> tuple[dict[str, Version], list[str]]:
    """{canonical name: version} of a `name==version` lock, and the problems with its lines."""
    pins: dict[str, Version] = {}
    problems = []
    for number, raw in enumerate(lock_text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if not match:
            problems.append(f"requirements.lock line {number} is not name==version: {raw!r}")
            continue
        name = canonicalize_name(match[1])
        try:
            version = Version(match[2])
        except InvalidVersion:
            problems.append(f"requirements.lock line {number}: invalid version {match[2]!r}")
            continue
        if name in pins:
            problems.append(f"requirements.lock pins {name} twice")
        pins[name] = version
    return pins, problems


def declared(pyproject_text: str, extras: Iterable[str] = ("dev",)) -> list[Requirement]:
    """[project] dependencies and the named extras of pyproject.toml, parsed."""
    project = tomllib.loads(pyproject_text)["project"]
    texts = list(project.get("dependencies", []))
    for extra in extras:
        texts += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(text) for text in texts]


# ---------------------------------------------------------------- the checks


def _bad_lightning(version: Version) -> bool:
    return version in MALICIOUS_LIGHTNING or version < FIRST_FIXED_LIGHTNING


# Every version a lightning specifier must reject: all of 0.0.0-2.6.5 on a grid, the two
# malicious uploads, and the pre-, post- and dev-releases around the fix.
_LIGHTNING_PROBES = sorted(
    {Version(f"{a}.{b}.{c}") for a in range(3) for b in range(10) for c in range(10)
     if Version(f"{a}.{b}.{c}") < FIRST_FIXED_LIGHTNING}
    | MALICIOUS_LIGHTNING
    | {Version(v) for v in ("2.6.2.post1", "2.6.3.post1", "2.6.5.post1", "2.6.6.dev0", "2.6.6rc1", "2.6.6a1")}
)


def lightning_problems(pyproject_text: str, lock_text: str) -> list[str]:
    """A known-bad lightning admitted by the lock or by pyproject's lightning specifier."""
    problems = []
    pins, _ = parse_lock(lock_text)
    for dist in LIGHTNING_DISTS:
        if dist in pins and _bad_lightning(pins[dist]):
            problems.append(f"requirements.lock pins {dist}=={pins[dist]}, before the fixed {FIRST_FIXED_LIGHTNING}")
    if "lightning" not in pins:
        problems.append("requirements.lock pins no lightning")
    specs = [req for req in declared(pyproject_text, extras=()) if canonicalize_name(req.name) == "lightning"]
    if not specs:
        problems.append("pyproject.toml does not declare lightning")
    for req in specs:
        admitted = [v for v in _LIGHTNING_PROBES if req.specifier.contains(v, prereleases=True)]
        if admitted:  # the malicious ones it admits, and the newest bad release (or pre-release)
            releases = [v for v in admitted if not (v.is_prerelease or v.is_postrelease)]
            named = sorted(MALICIOUS_LIGHTNING & set(admitted)) + [max(releases or admitted)]
            problems.append(f"pyproject.toml's {req} admits lightning {', '.join(map(str, dict.fromkeys(named)))}")
    return problems


def lock_vs_pyproject_problems(pyproject_text: str, lock_text: str) -> list[str]:
    """Declared dependencies (runtime and dev) missing from the lock, or locked outside their specifier."""
    pins, problems = parse_lock(lock_text)
    for req in declared(pyproject_text):
        if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
            continue
        name = canonicalize_name(req.name)
        if name == "lab":
            continue
        if name not in pins:
            problems.append(f"{req} is declared in pyproject.toml but not in requirements.lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {req}")
    if "lab" in pins:
        problems.append("requirements.lock pins lab itself")
    return problems


def installed_drift(lock_text: str, installed: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """Locked packages whose installed version differs from the lock (or which are not installed)."""
    pins, problems = parse_lock(lock_text)
    for name, locked in sorted(pins.items()):
        try:
            have = installed(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={locked} is locked but not installed")
            continue
        if Version(have) != locked:
            problems.append(f"{name} {have} is installed, the lock says {locked}")
    return problems


def _imports(path: Path) -> set[str]:
    """Absolute imports of a Python file, as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _local(module: str, importer: Path, root: Path, scripts: bool) -> bool:
    """Whether a module is the repository's own: a top-level folder, or for scripts (run with
    their folder on sys.path) a sibling module. hydra_plugins is a namespace shared with
    installed plugins, so there the second part decides."""
    parts = module.split(".")
    depth = 2 if parts[0] == "hydra_plugins" and len(parts) > 1 else 1
    for base in (root, importer.parent) if scripts else (root,):
        target = base.joinpath(*parts[:depth])
        if target.is_dir() or target.with_suffix(".py").is_file():
            return True
    return False


def module_owners() -> dict[str, list[str]]:
    """Import name -> the installed distributions providing it; for the hydra_plugins namespace
    also each plugin, as `hydra_plugins.<plugin>`."""
    owners = {name: list(dists) for name, dists in importlib.metadata.packages_distributions().items()}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            if len(file.parts) > 2 and file.parts[0] == "hydra_plugins":
                owners.setdefault(f"hydra_plugins.{file.parts[1]}", [])
                if dist.metadata["Name"] not in owners[f"hydra_plugins.{file.parts[1]}"]:
                    owners[f"hydra_plugins.{file.parts[1]}"].append(dist.metadata["Name"])
    return owners


def undeclared_imports(pyproject_text: str, root: Path, owners: dict[str, list[str]] | None = None) -> list[str]:
    """Third-party imports under root's RUNTIME_DIRS (DEV_DIRS) not declared as runtime (or runtime/dev)."""
    owners = module_owners() if owners is None else owners
    runtime = {canonicalize_name(req.name) for req in declared(pyproject_text, extras=())}
    dev = {canonicalize_name(req.name) for req in declared(pyproject_text)}
    problems = set()
    for folders, allowed, where in ((RUNTIME_DIRS, runtime, "dependencies"), (DEV_DIRS, dev, "dependencies or dev")):
        for folder in folders:
            if not (root / folder).is_dir():
                continue
            for path in sorted((root / folder).rglob("*.py")):
                for module in _imports(path):
                    parts = module.split(".")
                    if parts[0] in sys.stdlib_module_names or parts[0] == "__main__":
                        continue
                    if _local(module, path, root, scripts=folder in DEV_DIRS):
                        continue
                    # the hydra_plugins namespace alone names no distribution: its plugin does
                    name = ".".join(parts[:2]) if parts[0] == "hydra_plugins" else parts[0]
                    dists = {canonicalize_name(d) for d in owners.get(name, [])}
                    if not dists & allowed:
                        owner = ", ".join(sorted(dists)) or "no installed distribution"
                        problems.add(f"{path.relative_to(root).as_posix()} imports {name} ({owner}), "
                                     f"not in [project] {where}")
    return sorted(problems)


# ---------------------------------------------------------------- on the repository


@pytest.fixture(scope="module")
def pyproject_text() -> str:
    return PYPROJECT.read_text()


@pytest.fixture(scope="module")
def lock_text() -> str:
    assert LOCK.is_file(), "requirements.lock is missing: run `make lock`"
    return LOCK.read_text()


def test_lock_is_a_sorted_pin_list_with_its_header(lock_text):
    pins, problems = parse_lock(lock_text)
    assert not problems
    assert lock_text.startswith("# requirements.lock") and "make lock" in lock_text.split("\n\n")[0]
    names = [line.split("==")[0] for line in lock_text.splitlines() if line and not line.startswith("#")]
    assert names == sorted(names), "requirements.lock is not sorted: run `make lock`"
    assert pins.get("torch") == Version("2.14.1") and pins.get("torchvision") == Version("0.29.1")


def test_no_known_bad_lightning(pyproject_text, lock_text):
    assert lightning_problems(pyproject_text, lock_text) == []


def test_lock_agrees_with_pyproject(pyproject_text, lock_text):
    assert lock_vs_pyproject_problems(pyproject_text, lock_text) == []


def test_installed_versions_match_the_lock(lock_text):
    assert installed_drift(lock_text) == [], "the venv drifted from requirements.lock: run `make install`"


def test_every_third_party_import_is_declared(pyproject_text):
    assert undeclared_imports(pyproject_text, ROOT) == []


# ---------------------------------------------------------------- each check can fail


def _swap(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} not found: the doctoring below needs updating"
    return text.replace(old, new, 1)


def _lightning_spec(pyproject_text: str) -> str:
    return re.search(r'"lightning[^"]*"', pyproject_text)[0]


@pytest.mark.parametrize("bad", ["2.6.2", "2.6.3", "2.6.5", "2.5.0", "2.6.6rc1"])
def test_lightning_check_rejects_a_bad_lock(pyproject_text, lock_text, bad):
    doctored = re.sub(r"(?m)^lightning==.*$", f"lightning=={bad}", lock_text)
    assert any(f"lightning=={bad}" in p for p in lightning_problems(pyproject_text, doctored))


@pytest.mark.parametrize("spec", ["lightning>=2.2", "lightning<3", "lightning>=2.6.4,<3",
                                  "lightning!=2.6.2,!=2.6.3,>=2.6", "lightning>=2.6.5,<3", "lightning"])
def test_lightning_check_rejects_a_loose_specifier(pyproject_text, lock_text, spec):
    doctored = _swap(pyproject_text, _lightning_spec(pyproject_text), f'"{spec}"')
    assert any("admits lightning" in p for p in lightning_problems(doctored, lock_text))


def test_lightning_check_rejects_a_bad_pytorch_lightning(pyproject_text, lock_text):
    doctored = re.sub(r"(?m)^pytorch-lightning==.*$", "pytorch-lightning==2.6.3", lock_text)
    assert lightning_problems(pyproject_text, doctored) == [
        "requirements.lock pins pytorch-lightning==2.6.3, before the fixed 2.6.6"]


def test_lock_check_finds_a_missing_pin(pyproject_text, lock_text, tmp_path):
    broken = tmp_path / "requirements.lock"
    broken.write_text(re.sub(r"(?m)^numpy==.*\n", "", lock_text))
    problems = lock_vs_pyproject_problems(pyproject_text, broken.read_text())
    assert len(problems) == 1 and problems[0].startswith("numpy") and "not in requirements.lock" in problems[0]


def test_lock_check_finds_a_pin_outside_the_specifier(pyproject_text, lock_text, tmp_path):
    broken = tmp_path / "pyproject.toml"
    broken.write_text(_swap(pyproject_text, '"pytest>=', '"pytest>=99,>='))
    problems = lock_vs_pyproject_problems(broken.read_text(), lock_text)
    assert len(problems) == 1 and "outside pyproject.toml's pytest" in problems[0]
    doctored_lock = re.sub(r"(?m)^pillow==.*$", "pillow==9.5.0", lock_text)
    problems = lock_vs_pyproject_problems(pyproject_text, doctored_lock)
    assert len(problems) == 1 and "pins pillow==9.5.0, outside pyproject.toml's pillow" in problems[0]


def test_lock_check_finds_a_malformed_line(pyproject_text, lock_text):
    problems = lock_vs_pyproject_problems(pyproject_text, lock_text + "rich>=13\n")
    assert any("not name==version" in p for p in problems)


def test_drift_check_finds_a_drifted_venv(lock_text):
    pins, _ = parse_lock(lock_text)

    def drifted(name: str) -> str:
        if name == "rich":
            return "13.0.0"
        if name == "numpy":
            raise importlib.metadata.PackageNotFoundError(name)
        return str(pins[name])

    assert installed_drift(lock_text, drifted) == [
        f"numpy=={pins['numpy']} is locked but not installed",
        f"rich 13.0.0 is installed, the lock says {pins['rich']}",
    ]


def test_import_check_finds_undeclared_modules(pyproject_text, tmp_path):
    (tmp_path / "lab" / "sub").mkdir(parents=True)
    (tmp_path / "lab" / "__init__.py").write_text("import os\nfrom lab.sub import x\nimport numpy\n")
    (tmp_path / "lab" / "sub" / "x.py").write_text("def f():\n    from PIL import Image\n    import pytest\n")
    (tmp_path / "lab" / "plug.py").write_text(
        "from hydra_plugins.hydra_nobody import q\nimport yaml\n"
        "from hydra_plugins.hydra_joblib_launcher import joblib_launcher\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "common.py").write_text("")
    (tmp_path / "bench" / "b.py").write_text("import common\nimport pytest\nimport nbformat\nimport somethingelse\n")
    without_pillow = re.sub(r'(?m)^\s*"pillow[^"]*",\n', "", pyproject_text)
    owners = {"numpy": ["numpy"], "PIL": ["Pillow"], "pytest": ["pytest"], "yaml": ["PyYAML"],
              "nbformat": ["nbformat"], "hydra_plugins": ["hydra-joblib-launcher", "lab"],
              "hydra_plugins.hydra_joblib_launcher": ["hydra-joblib-launcher"]}
    assert undeclared_imports(without_pillow, tmp_path, owners) == [
        "bench/b.py imports somethingelse (no installed distribution), not in [project] dependencies or dev",
        "lab/plug.py imports hydra_plugins.hydra_nobody (no installed distribution), not in [project] dependencies",
        "lab/sub/x.py imports PIL (pillow), not in [project] dependencies",
        "lab/sub/x.py imports pytest (pytest), not in [project] dependencies",
    ]
