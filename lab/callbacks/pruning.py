"""Prune an Optuna trial from its per-epoch validation metric (`hparams_search=optuna`).

lab's Optuna sweeper (hydra_plugins.lab_optuna_sweeper) runs each trial as a lab.run job, in its
own process (joblib, submitit) or in the sweeper's (the basic launcher). Either way this callback
reaches the trial through the study's storage (by default `<sweep>/optuna.db`), found from the
job's own Hydra config: `hydra.sweeper` (storage, study name, pruner) and `hydra.job.num`, which
the sweeper makes the trial number. After each validation epoch it reports the objective metric
(task.objective.metric) at the epoch lab counts (the task's epoch_position, as best_epoch); when
the pruner says so, it stops training the way EarlyStopping does (`trainer.should_stop`) and marks
the trial (user attribute pruned_at_epoch), and the sweeper tells Optuna PRUNED once the job
returns. The job itself ends normally: the test of its best checkpoint, metrics.json.

Outside such a sweep (a single run, `resume=`, lab.eval) it is inactive and Lightning never sees
it. With explicit storage, study_name and trial_number it serves any code that drives trials.
Under DDP rank 0 talks to the storage and broadcasts the decision, so every rank stops together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lab.errors import LabError
from lab.results import trials as db


class OptunaPruning(Callback):
    """Report `monitor` after each validation epoch to the trial; stop the run when it should be pruned."""

    def __init__(self, monitor: str, storage: str | None = None, study_name: str | None = None,
                 trial_number: int | None = None, pruner: Any = None) -> None:
        self.monitor = monitor
        if storage is not None:
            if study_name is None or trial_number is None:
                raise LabError("OptunaPruning: with storage, give study_name and trial_number too")
            self.link: tuple[str, str, int, Any] | None = (storage, study_name, int(trial_number), pruner)
        else:
            self.link = _link_from_hydra()
        self.active = self.link is not None
        self.pruned_at: int | None = None
        self._trial: Any = None
        self._storage: Any = None
        self._trial_id: int | None = None
        self._warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.active or not trainer.is_global_zero or self._trial is not None:
            return
        import optuna

        url, name, number, pruner = self.link
        db.quiet_optuna()
        try:
            self._storage = db.open_storage(url)
            study = optuna.load_study(study_name=name, storage=self._storage, pruner=db.build_pruner(pruner),
                                      sampler=optuna.samplers.RandomSampler())
            study_id = self._storage.get_study_id_from_name(name)
            self._trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, number)
            self._trial = optuna.trial.Trial(study, self._trial_id)
        except LabError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever stops it, one line naming the trial and the storage
            message = " ".join(str(err).split())
            raise LabError(f"Optuna pruning: cannot reach trial {number} of study {name} in {url} "
                           f"({type(err).__name__}: {message})") from None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.sanity_checking:
            return
        position = getattr(pl_module, "epoch_position", None)
        epoch = int(position()) if callable(position) else int(trainer.current_epoch)
        value = trainer.callback_metrics.get(self.monitor)
        prune = False
        if trainer.is_global_zero and self._trial is not None:
            if value is None:
                if not self._warned:
                    self._warned = True
                    _say(f"optuna: no {self.monitor} was logged at epoch {epoch}; this trial is not "
                         f"pruned (set callbacks.optuna_pruning.monitor to a logged validation metric)")
            else:
                if epoch not in self._storage.get_trial(self._trial_id).intermediate_values:
                    self._trial.report(float(value), epoch)  # a trial run again keeps its first report
                prune = bool(self._trial.should_prune())
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned_at = epoch
            trainer.should_stop = True
            if trainer.is_global_zero:
                self._trial.set_user_attr(db.PRUNED_AT, epoch)
                _say(f"optuna: trial {self.link[2]} pruned at epoch {epoch} ({self.monitor} {float(value):.4g}); "
                     "training stops here")


def _link_from_hydra() -> tuple[str, str, int, Any] | None:
    """(storage URL, study name, trial number, pruner node) of a job lab's Optuna sweeper launched, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN or str(hydra.sweeper.get("_target_", "")) != db.SWEEPER_TARGET:
        return None
    sweeper = hydra.sweeper
    sweep_dir = Path(str(hydra.sweep.dir))
    url = sweeper.get("storage") or db.storage_url(sweep_dir)
    name = sweeper.get("study_name") or sweep_dir.resolve().name
    pruner = sweeper.get("pruner")
    pruner = OmegaConf.to_container(pruner, resolve=True) if pruner is not None else None
    return str(url), str(name), int(hydra.job.num), pruner


def _say(line: str) -> None:
    from lab.utils.console import console

    console.print(line, markup=False, highlight=False, soft_wrap=True)
