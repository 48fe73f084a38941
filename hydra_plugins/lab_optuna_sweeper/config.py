"""The sweeper's config schema, registered in Hydra's ConfigStore: `hydra/sweeper=lab_optuna`, its
samplers (`hydra/sweeper/sampler=tpe|random`) and pruners (`hydra/sweeper/pruner=none|median|hyperband`).

Each sampler and pruner node is instantiated with Hydra (`_target_` and Optuna's own argument names);
the sweeper instantiates them itself (`_recursive_: false`), so a resumed study can reseed its sampler
and each trial's job can build the same pruner (lab.callbacks.pruning). No `from __future__ import
annotations` here: Hydra loads plugin modules outside sys.modules, where dataclasses cannot resolve
string annotations.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lab.results.trials import SWEEPER_TARGET


@dataclass
class TPESamplerConf:
    """optuna.samplers.TPESampler: random for the first n_startup_trials, then TPE."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    constant_liar: bool = True  # parallel trials (n_jobs > 1) do not all pick the same point


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class NopPrunerConf:
    """No pruning: every trial runs all its epochs."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    """Stop a trial whose best value so far is worse than the median of the finished trials' at the same epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # no pruning until this many trials are COMPLETE
    n_warmup_steps: int = 0  # epochs of each trial never pruned
    interval_steps: int = 1
    n_min_trials: int = 1  # finished trials that must have reached an epoch for it to be judged


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # "auto": the epochs of the first finished trial, or a number of epochs
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class LabOptunaSweeperConf:
    _target_: str = SWEEPER_TARGET
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    _recursive_: bool = False  # sampler and pruner stay configs: the sweeper builds them

    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: str = "minimize"  # minimize | maximize: of the value each job returns
    study_name: Optional[str] = None  # None: the sweep folder's name
    storage: Optional[str] = None  # None: sqlite:///<sweep dir>/optuna.db; else any Optuna storage URL
    n_trials: int = 20  # finished trials (COMPLETE, PRUNED, FAIL) the study ends with
    n_jobs: int = 1  # trials launched together (in parallel with a parallel launcher)
    max_failure_rate: float = 0.0  # failed trials of a batch above this fraction abort the search
    params: Optional[dict[str, str]] = None  # key -> choice(...) | range(...) | interval(...) | tag(log, ...)


_STORE = ConfigStore.instance()
_STORE.store(group="hydra/sweeper", name="lab_optuna", node=LabOptunaSweeperConf, provider="lab")
_STORE.store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConf, provider="lab")
_STORE.store(group="hydra/sweeper/sampler", name="random", node=RandomSamplerConf, provider="lab")
_STORE.store(group="hydra/sweeper/pruner", name="none", node=NopPrunerConf, provider="lab")
_STORE.store(group="hydra/sweeper/pruner", name="median", node=MedianPrunerConf, provider="lab")
_STORE.store(group="hydra/sweeper/pruner", name="hyperband", node=HyperbandPrunerConf, provider="lab")
