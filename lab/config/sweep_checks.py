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


def check_sweep(argv: list[str], conf_dir: str, build: bool = True) -> None:
    """Raise ConfigError when the sweep in `argv` cannot run on its config: a group=option naming
    no option, a sweep with no values for this model family or schedule, a swept key the config
    lacks, or (`build`) a job that cannot be built (lab.config.preflight)."""
    check_group_options(argv, conf_dir)
    if not any(a in ("-m", "--multirun") for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("-")]
    name = _sweep_name(overrides)
    if _extra_search_path(argv):
        return
    if name is not None:
        sweep_file = Path(conf_dir) / "sweep" / f"{name}.yaml"
        if not sweep_file.is_file():
            available = sorted(p.stem for p in sweep_file.parent.glob("*.yaml"))
            raise ConfigError(f"sweep={name}: no {sweep_file}; available sweeps: {', '.join(available)}")
    fixed, swept = _split_overrides(overrides)
    cfg = _compose(fixed, conf_dir)
    choices = cfg.hydra.runtime.choices
    what = ", ".join(f"{g}={choices.get(g)}" for g in ("experiment", "model", "optimizer", "scheduler", "data"))
    name = name or choices.get("sweep")  # a study (conf/study/) chooses its sweep itself
    if name is not None:
        _check_family_values(name, choices, conf_dir)
    found = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(found, resolve=True) if found else {}
    if name == "folds":
        _check_every_fold(fixed, swept, params)
    for key in params if name is not None else ():  # a search's keys: lab.results.sweep_status checks them
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
    if build and str(cfg.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        # the basic sweeper's grid is known now; a search (Optuna) picks its values as it goes
        from lab.config.preflight import check_jobs, distinct, sweep_jobs

        check_jobs(conf_dir, fixed, distinct(sweep_jobs(fixed, swept, params)))


def _check_family_values(name: str, choices, conf_dir: str) -> None:
    """sweep=depth (or decay_factor) takes its values from conf/sweep_by_<group>/<sweep>/<choice>.yaml:
    a model family or schedule with no file there has no such knob."""
    for group in ("model", "scheduler"):
        folder = Path(conf_dir) / f"sweep_by_{group}" / name
        if folder.is_dir() and not (folder / f"{choices.get(group)}.yaml").is_file():
            have = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise ConfigError(f"sweep={name} has no values for {group}={choices.get(group)} (no {folder}/"
                              f"{choices.get(group)}.yaml); it sweeps {group}={have}")


def _check_every_fold(fixed: list[str], swept: list[str], params: dict) -> None:
    """sweep=folds must run every fold of data.folds: `data.folds=10` alone would still run folds 0..4."""
    from lab.config.preflight import sweep_jobs

    runs: dict[str, set[str]] = {}
    for job in sweep_jobs(fixed, swept, params):
        values = dict(item.split("=", 1) for item in job)
        runs.setdefault(values.get("data.folds", ""), set()).add(values.get("data.fold", ""))
    for folds, ran in runs.items():
        every = {str(i) for i in range(int(folds))} if folds.isdigit() else set()
        if every and ran != every:
            listed = ",".join(sorted(ran, key=lambda v: int(v) if v.isdigit() else -1))
            raise ConfigError(f"sweep=folds runs data.fold={listed} of data.folds={folds}, not every fold: "
                              f"add data.fold=range(0,{folds})")


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


def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the overrides every job shares, the command line's sweep overrides such as seed=0,1,2)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
    swept = [o for o, p in zip(overrides, parsed) if p.is_sweep_override()]
    return fixed, swept


def _compose(fixed: list[str], conf_dir: str) -> DictConfig:
    """The config the sweep's jobs share, with the hydra node (its sweeper params) (Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        return compose(config_name="config", overrides=fixed, return_hydra_config=True)
