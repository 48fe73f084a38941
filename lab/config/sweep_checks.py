"""Checks a sweep against the config it will run on, before any job starts.

`python -m lab.run -m experiment=X sweep=Y` fails early, in one line, when sweep Y
changes a knob that experiment X's config does not have (e.g. momentum with Adam),
instead of Hydra stopping at the first job with a merge error.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError


def _sweep_name(overrides: list[str]) -> str | None:
    for item in overrides:
        if item.startswith("sweep="):
            return item.split("=", 1)[1]
    return None


def check_group_options(argv: list[str], conf_dir: str) -> None:
    """`experiment=nope` (or any group=option naming no file in conf/<group>/) fails in one
    line that lists the group's options, before Hydra starts and writes anything. With
    `hydra.searchpath=[...]` options may live in other folders too: Hydra then checks them itself."""
    if _extra_search_path(argv):
        return
    root = Path(conf_dir)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+~")
        if not group or "." in group or group.startswith("hydra") or any(c in value for c in "()[]{}'\"$"):
            continue
        folder = root / group
        if not folder.is_dir() or (key.startswith("~") and not value):
            continue
        available = sorted(p.stem for p in folder.glob("*.yaml"))
        for option in (v.strip() for v in value.split(",")):
            if option in ("", "null") or "/" in option:
                continue
            if not (folder / f"{option}.yaml").is_file():
                raise ConfigError(f"{group}={option}: no such option (no {folder / option}.yaml); "
                                  f"available {group} options: {', '.join(available)}")


def _extra_search_path(argv: list[str]) -> bool:
    return any(a.lstrip("+").startswith("hydra.searchpath=") for a in argv)


def check_sweep(argv: list[str], conf_dir: str) -> None:
    """Raise ConfigError when the sweep named in `argv` sweeps a key the config lacks
    (and, first, when any group=option names no option)."""
    check_group_options(argv, conf_dir)
    if not any(a in ("-m", "--multirun") for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("-")]
    name = _sweep_name(overrides)
    if name is None or _extra_search_path(argv):
        return
    sweep_file = Path(conf_dir) / "sweep" / f"{name}.yaml"
    if not sweep_file.is_file():
        available = sorted(p.stem for p in sweep_file.parent.glob("*.yaml"))
        raise ConfigError(f"sweep={name}: no {sweep_file}; available sweeps: {', '.join(available)}")
    params = OmegaConf.select(OmegaConf.load(sweep_file), "hydra.sweeper.params") or {}
    cfg = _compose_without_sweeps(overrides, conf_dir)
    what = ", ".join(f"{g}={cfg.hydra.runtime.choices.get(g)}" for g in ("experiment", "model", "optimizer",
                                                                          "scheduler", "data"))
    for key in params:
        group_dir = Path(conf_dir) / key.lstrip("+")
        if group_dir.is_dir():  # a swept config group: every key its options set must exist
            for option in str(params[key]).split(","):
                option_file = group_dir / f"{option.strip()}.yaml"
                if not option_file.is_file():
                    raise ConfigError(f"sweep={name}: {key}={option.strip()} has no file {option_file}")
                for leaf in _leaf_keys(OmegaConf.load(option_file)):
                    _require(cfg, leaf, name, what)
        else:
            _require(cfg, key, name, what)


def _require(cfg: DictConfig, key: str, sweep: str, what: str) -> None:
    if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(cfg, parent) if parent else cfg
        have = sorted(node.keys()) if isinstance(node, DictConfig) else []
        raise ConfigError(
            f"sweep={sweep} sets {key}, which this config ({what}) does not have"
            + (f"; {parent} has {', '.join(map(str, have))}" if have else "")
            + "; choose an experiment or model with that knob"
        )


_MISSING = object()


def _leaf_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        keys += _leaf_keys(v, path + ".") if isinstance(v, DictConfig) else [path]
    return keys


def _compose_without_sweeps(overrides: list[str], conf_dir: str) -> DictConfig:
    """The config of the sweep's first job minus the swept values (Hydra's compose API)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o for o, parsed in zip(overrides, parser.parse_overrides(overrides)) if not parsed.is_sweep_override()]
    fixed = [o for o in fixed if not o.startswith("sweep=")]
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        return compose(config_name="config", overrides=fixed, return_hydra_config=True)
