"""What lab.eval and lab.predict share: a checkpoint's run config, rebuilt, with the user's overrides.

Both are Hydra entry points with a small config of their own (conf/eval.yaml,
conf/predict.yaml: ckpt_path, run_dir, output folder). Every other `key=value` on the
command line overrides the config of the run that wrote the checkpoint, which is read
from that run's folder (`.hydra/config.yaml`, unresolved, so `${paths...}` resolve for
the new job; else its resolved `config.yaml`). Group overrides (`trainer=cpu`) take the
group's node from a fresh composition of the run's own overrides plus that choice.

The run config is prepared before Hydra starts, so a wrong path or key stops with one
line and no output folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lab.config.overrides import quote
from lab.config.paths import config_dir
from lab.errors import ConfigError, LabError
from lab.runs.folder import CONFIG, HYDRA, OVERRIDES

PATH_KEYS = ("ckpt_path", "run_dir")  # taken raw: checkpoint names may hold '=' (Lightning's epoch=3-step=9.ckpt)
_ABSENT = object()


@dataclass
class Job:
    """A checkpoint and the config to rebuild its model and data with."""

    ckpt: Path
    run_dir: Path
    config_file: Path
    cfg: DictConfig                      # the run's config with `overrides` applied, unresolved
    overrides: list[str] = field(default_factory=list)
    own: dict[str, Any] = field(default_factory=dict)   # the entry point's own keys (split, top_k, ...)
    hydra_argv: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)       # the full command line (sys.argv) it came from


_PREPARED: Job | None = None  # handed from __main__ to the Hydra job (Hydra only sees the entry's own keys)


def _parse(token: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides([token])[0]
    except OverrideParseException as err:
        raise ConfigError(f"cannot read the override {token!r}: {str(err).splitlines()[0]}") from err


def split_argv(argv: Sequence[str], own_keys: Sequence[str]) -> tuple[list[str], dict[str, Any], list[str]]:
    """(arguments for Hydra, the entry's own keys and values, overrides of the run's config).

    Flags and their values, `hydra.*` and the entry's own keys go to Hydra; `paths.*` go to
    both (they place the new job's folder and the data); everything else is a run override.
    """
    hydra_argv: list[str] = []
    own: dict[str, Any] = {}
    run_overrides: list[str] = []
    for token in argv:
        if token.startswith("-") or ("=" not in token and not token.startswith("~")):
            hydra_argv.append(token)  # --cfg job, -m, --hydra-help, a flag's value
            continue
        key = token.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        if key in PATH_KEYS and token.startswith(f"{key}="):
            raw = token.split("=", 1)[1]
            if len(raw) > 1 and raw[0] == raw[-1] and raw[0] in "'\"":
                raw = raw[1:-1]
            own[key] = raw
            hydra_argv.append(f"{key}={quote(raw)}")
        elif key in own_keys:
            override = _parse(token)
            if override.is_sweep_override():
                raise ConfigError(f"{token}: one value at a time (run the command once per value)")
            own[key] = override.value()
            hydra_argv.append(token)
        elif key.startswith("hydra."):
            hydra_argv.append(token)
        else:
            if key.startswith("paths."):
                hydra_argv.append(token)
            run_overrides.append(token)
    return hydra_argv, own, run_overrides


def _container_has(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """Whether `key` (dotted) exists in cfg, without resolving interpolations; and the deepest node reached."""
    node: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, node
    return True, node


def _missing_key(key: str, node: Any, token: str) -> ConfigError:
    parent = key.rsplit(".", 1)[0] if "." in key else "the config"
    have = f"; {parent} has {', '.join(map(str, node))}" if isinstance(node, dict) and node else ""
    return ConfigError(f"{token}: the run's config has no {key}{have} (add a new key with +{key}=...)")


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], run_dir: Path, conf_dir: str | None = None) -> None:
    """Apply command-line overrides to a run's saved config, in place, with Hydra's meaning of =, +, ++ and ~."""
    conf = Path(conf_dir or config_dir())
    parsed = [(token, _parse(token)) for token in overrides]
    groups = []
    for token, override in parsed:
        if override.is_sweep_override():
            raise ConfigError(f"{token}: one value at a time (run the command once per value)")
        key = override.key_or_group
        if "." not in key and (conf / key).is_dir() and not override.is_delete():
            groups.append((token, override))
    if groups:
        _swap_groups(cfg, groups, run_dir, str(conf))
    swapped = {id(o) for _, o in groups}
    for token, override in parsed:
        if id(override) in swapped:
            continue
        key = override.key_or_group
        exists, node = _container_has(cfg, key)
        if override.is_delete():
            if not exists:
                raise _missing_key(key, node, token)
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if isinstance(parent, ListConfig):
                del parent[int(leaf)]
            else:
                del parent[leaf]
        elif override.is_add() and exists:
            raise ConfigError(f"{token}: the run's config already has {key}; set it with {key}=...")
        elif override.is_add() or override.is_force_add():
            OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)
        elif not exists:
            raise _missing_key(key, node, token)
        else:
            OmegaConf.update(cfg, key, override.value(), merge=True)


def _swap_groups(cfg: DictConfig, groups: list, run_dir: Path, conf_dir: str) -> None:
    """`trainer=cpu`: the group's node as the run would have had it with that choice added."""
    from hydra import compose, initialize_config_dir

    saved = run_dir / HYDRA / OVERRIDES
    earlier = [str(o) for o in OmegaConf.load(saved)] if saved.is_file() else []
    earlier = [o for o in earlier if not o.lstrip("+~").startswith("hydra.")]
    tokens = [token for token, _ in groups]
    for token, override in groups:
        if override.key_or_group not in cfg:
            raise ConfigError(f"{token}: lab.eval/lab.predict keep the run's config and swap only groups that are "
                              f"a key of it ({', '.join(k for k in cfg if (Path(conf_dir) / str(k)).is_dir())}); "
                              "override single keys instead")
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            fresh = compose(config_name="config", overrides=[*earlier, *tokens])
    except Exception as err:  # Hydra's composition errors: missing option, bad value
        message = " ".join(str(err).split())
        raise ConfigError(f"{' '.join(tokens)}: cannot compose the run's config with it: {message}") from err
    for _, override in groups:
        key = override.key_or_group
        cfg[key] = fresh[key] if key in fresh else None  # group=null drops the group


def prepare(argv: Sequence[str], own_keys: Sequence[str], entry: str,
            check: Callable[[dict[str, Any]], None] | None = None) -> Job:
    """Read the command line, find the checkpoint's run, load its config and apply the overrides.

    `check` validates the entry's own keys here, before Hydra creates the output folder."""
    from lab.runs.checkpoints import checkpoint_file, find_run_config, rebase_output_dir

    hydra_argv, own, overrides = split_argv(argv, [*PATH_KEYS, *own_keys])
    if check is not None:
        check(own)
    if not own.get("ckpt_path"):
        raise ConfigError(f"ckpt_path is required: python -m {entry} ckpt_path=outputs/runs/<run>/checkpoints/"
                          "<file>.ckpt key=value ...")
    ckpt = checkpoint_file(own["ckpt_path"], "ckpt_path").resolve()
    config_file = find_run_config(ckpt, own.get("run_dir"))
    run_dir = config_file.parent.parent if config_file.parent.name == HYDRA else config_file.parent
    try:
        cfg = OmegaConf.load(config_file)
    except Exception as err:  # noqa: BLE001 - unreadable YAML: say which file
        raise ConfigError(f"{config_file}: cannot read the run's config ({' '.join(str(err).split())})") from err
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "data" not in cfg:
        raise ConfigError(f"{config_file} is not a lab run config (no data and model)")
    rebase_output_dir(cfg)
    apply_overrides(cfg, overrides, run_dir)
    if not any(t.split("=", 1)[0] == "name" for t in hydra_argv):
        try:
            name = str(OmegaConf.select(cfg, "name", throw_on_resolution_failure=True) or "")
        except Exception:  # noqa: BLE001 - a name that needs Hydra's runtime: fall back to the entry's default
            name = ""
        if name and all(c.isalnum() or c in "._-" for c in name):
            hydra_argv.append(f"name={name}")
    return Job(ckpt, run_dir.resolve(), config_file.resolve(), cfg, list(overrides), own, hydra_argv)


def launch(entry: str, own_keys: Sequence[str], help_text: str, hydra_main: Callable[[], Any],
           check: Callable[[dict[str, Any]], None] | None = None) -> None:
    """`python -m lab.eval|lab.predict ...`: prepare the job, then let Hydra create the folder and run it."""
    global _PREPARED
    from lab.config.overrides import quote_verbatim

    argv = quote_verbatim(sys.argv[1:])
    if any(arg in ("--help", "-h") for arg in argv):
        print(help_text, end="")
        sys.exit(0)
    from lab.utils.console import print_error

    try:
        if any(a in ("-m", "--multirun") for a in argv):
            raise ConfigError(f"{entry} evaluates one checkpoint per command (no -m); run it once per checkpoint")
        job = prepare(argv, own_keys, entry, check)
    except LabError as err:
        print_error(" ".join(str(err).split()))
        sys.exit(2)
    if any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv):
        print(OmegaConf.to_yaml(job.cfg), end="")  # the run config this job would build from
        sys.exit(0)
    _PREPARED = job
    job.argv = list(sys.argv)
    sys.argv = [sys.argv[0], *job.hydra_argv]
    try:
        hydra_main()
    finally:
        sys.argv = job.argv


def run_job(body: Callable[[Job, Path], Any]) -> Any:
    """Inside the Hydra job: run `body(job, output folder)`; user errors print one line and exit 2."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    from lab.run import user_error
    from lab.utils.console import print_error

    job = _PREPARED
    if job is None:
        raise RuntimeError("run_job needs launch() to prepare the job first")
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if job.argv:
        # DDP: rank > 0 processes re-run the user's whole command line (Hydra only saw the entry's
        # own keys), into this job's folder (lab.train.distributed adds hydra.run.dir).
        from lab.train.ddp_launch import set_child_args

        set_child_args(job.argv[1:])
    try:
        return body(job, out_dir)
    except (LabError, InstantiationException, ValueError) as err:
        print_error(user_error(err))
        sys.exit(2)


def describe(job: Job) -> str:
    """What is rebuilt from where: checkpoint, run config, overrides (printed before the work starts)."""
    text = f"checkpoint {job.ckpt}\nrun config {job.config_file}"
    if job.overrides:
        text += f"\noverrides  {' '.join(job.overrides)}"
    return text


def write_provenance(job: Job, out_dir: Path, extra: dict[str, Any] | None = None) -> None:
    """config.yaml (the run config as used, resolved) and source.yaml (checkpoint, run, overrides)."""
    from lab.utils.io import atomic_write_text

    atomic_write_text(out_dir / CONFIG, OmegaConf.to_yaml(job.cfg, resolve=True))
    source = {"ckpt_path": str(job.ckpt), "run_dir": str(job.run_dir), "run_config": str(job.config_file),
              "overrides": list(job.overrides), **(extra or {})}
    atomic_write_text(out_dir / "source.yaml", OmegaConf.to_yaml(OmegaConf.create(source)))
