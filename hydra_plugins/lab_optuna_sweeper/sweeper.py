"""The sweeper: asks Optuna for trials, launches each as a Hydra job, tells Optuna how it ended.

- The study lives in `hydra.sweeper.storage` (default `sqlite:///<sweep dir>/optuna.db`) under
  `hydra.sweeper.study_name`. Running the same command again on the same sweep folder
  (`hydra.sweep.dir=<folder>`) continues that study: its finished trials (COMPLETE, PRUNED, FAIL)
  count towards n_trials, and a trial a killed launch left RUNNING is run again, with its
  parameters and trial number, in its own job folder ($LAB_RESUME_SWEEP: lab.run continues it from
  its last.ckpt, or skips it if it had finished: lab.train.resume). A sampler with a seed is
  reseeded with seed + the trials already in the study, so a resumed search does not draw its
  first trials' values again. A study made by other search arguments is refused.
- Job folder = trial number (the launcher's job index), so a resumed launch never reuses a folder.
- A job that raised (error.json) is told FAIL; one whose trial the pruning callback marked
  (lab.callbacks.pruning: user attribute pruned_at_epoch) is told PRUNED; any other is told
  COMPLETE with the value lab.run returned (task.objective's best value).
- optimization_results.yaml (best_params, best_value) is written when the search ends, as before.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError, LabError
from lab.results import trials as db

DIRECTIONS = ("minimize", "maximize")


class LabOptunaSweeper(Sweeper):
    """hydra/sweeper=lab_optuna (hydra_plugins.lab_optuna_sweeper.config): see the module docstring."""

    def __init__(self, sampler: Any, pruner: Any, direction: str, study_name: str | None, storage: str | None,
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: Any = None) -> None:
        self.sampler_cfg = _plain(sampler)
        self.pruner_cfg = _plain(pruner)
        self.direction = str(direction)
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = _plain(params) or {}
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.sweep_dir = Path(".")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()

    def sweep(self, arguments: list[str]) -> None:
        """Run the search; a setting or a study that cannot work stops it in one line (exit status 2)."""
        try:
            self._sweep(list(arguments))
        except LabError as err:
            from lab.utils.console import print_error

            print_error(" ".join(str(err).split()))
            raise SystemExit(2) from None

    # --- the search ------------------------------------------------------------------
    def _sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        from hydra_plugins.lab_optuna_sweeper.space import search_space
        from lab.train.resume import SWEEP_ENV

        self._check_options()
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + arguments)
        if not space:
            raise ConfigError("hydra.sweeper.params and the command line search nothing; give a dimension, e.g. "
                              "'optimizer.lr=tag(log,interval(1e-4,1e-1))'")
        db.quiet_optuna()
        url = self.storage or db.storage_url(self.sweep_dir)
        name = self.study_name or self.sweep_dir.name
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = db.open_storage(url)
        earlier = self._earlier_trials(optuna, storage, name, space, fixed)
        study = optuna.create_study(study_name=name, storage=storage, direction=self.direction,
                                    sampler=self._sampler(len(earlier)), pruner=self._pruner(), load_if_exists=True)
        if not earlier:
            study.set_user_attr(db.SEARCH_ATTR, _space_json(space))
            study.set_user_attr(db.FIXED_ATTR, sorted(fixed))
        finished = [t for t in earlier if t.state.is_finished()]
        rerun = sorted((t for t in earlier if t.state == TrialState.RUNNING), key=lambda t: t.number)
        self._check_not_running_elsewhere(rerun, url)
        to_ask = max(0, self.n_trials - len(finished) - len(rerun))
        if earlier and not rerun and not to_ask:
            what = f"it has {len(finished)} finished trials, n_trials={self.n_trials}: nothing to run (raise " \
                   "hydra.sweeper.n_trials to search further)"
        elif earlier:
            what = f"resumed with {len(finished)} finished trial(s), {len(rerun)} to run again, {to_ask} new"
        else:
            what = f"new, {to_ask} trial(s)"
        _say(f"optuna: study {name} in {url}: {what}; to continue it if interrupted, run the same command with "
             f"hydra.sweep.dir={self.sweep_dir}")

        previous_env = os.environ.get(SWEEP_ENV)
        if rerun:  # lab.run continues a killed trial's job from its last.ckpt (or skips it if it finished)
            os.environ[SWEEP_ENV] = str(self.sweep_dir)
        try:
            while rerun or to_ask > 0:
                batch = [self._adopt(study, storage, rerun.pop(0), space) for _ in range(min(len(rerun), self.n_jobs))]
                while to_ask > 0 and len(batch) < self.n_jobs:
                    trial = study.ask(fixed_distributions=space)
                    trial.set_user_attr(db.LAUNCHED_BY, _owner())
                    batch.append(trial)
                    to_ask -= 1
                self._run_batch(study, batch, space, fixed)
        finally:
            if previous_env is None:
                os.environ.pop(SWEEP_ENV, None)
            else:
                os.environ[SWEEP_ENV] = previous_env
        self._write_results(study, url)

    def _check_options(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction={self.direction}: must be minimize or maximize")
        if not isinstance(self.n_trials, int) or self.n_trials < 0:
            raise ConfigError(f"hydra.sweeper.n_trials={self.n_trials}: must be a whole number >= 0")
        if not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={self.n_jobs}: must be a whole number >= 1")
        if not 0.0 <= float(self.max_failure_rate) <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: must be in [0, 1]")

    def _earlier_trials(self, optuna: Any, storage: Any, name: str, space: dict, fixed: list[str]) -> list:
        """The trials of the study already in the storage ([] for a new study), after checking that it is
        this search's: the same direction, search space and fixed arguments."""
        if name not in optuna.get_all_study_names(storage):
            taken = sorted((p.name for p in self.sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()),
                           key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
            if taken:
                raise ConfigError(f"hydra.sweep.dir={self.sweep_dir} already holds job folders ({', '.join(taken[:5])}"
                                  f"{', ...' if len(taken) > 5 else ''}) but no study {name} in its storage; "
                                  f"give a new hydra.sweep.dir (or the study's hydra.sweeper.study_name)")
            return []
        study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
        where = f"study {name} in {self.storage or self.sweep_dir / db.DB}"
        if study.direction.name.lower() != self.direction:
            raise ConfigError(f"{where} is to {study.direction.name.lower()}, not hydra.sweeper.direction="
                              f"{self.direction}; resume it with its own direction or give a new hydra.sweep.dir")
        attrs = study.user_attrs
        problem = _difference(attrs.get(db.SEARCH_ATTR), _space_json(space), "searches")
        problem = problem or _difference(attrs.get(db.FIXED_ATTR), sorted(fixed), "runs with")
        if problem:
            raise ConfigError(f"{where} was made by another search: it {problem}; run the same command as its "
                              f"first launch (with hydra.sweep.dir={self.sweep_dir}) or give a new hydra.sweep.dir")
        return study.get_trials(deepcopy=False)

    def _check_not_running_elsewhere(self, running: list, url: str) -> None:
        for trial in running:
            pid = _live_owner(trial.user_attrs.get(db.LAUNCHED_BY))
            if pid is not None:
                raise ConfigError(f"trial {trial.number} of {url} is running in process {pid} on this host (another "
                                  f"launch of this search); wait for it to end, or stop it (kill {pid}), then run "
                                  "this command again")

    def _adopt(self, study: Any, storage: Any, frozen: Any, space: dict) -> Any:
        """A trial a killed launch left RUNNING, to run again with its own number and parameters."""
        import optuna

        study_id = storage.get_study_id_from_name(study.study_name)
        trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number))
        for key, distribution in space.items():  # a launch killed inside ask() may have left some unset
            _suggest(trial, key, distribution)
        trial.set_user_attr(db.LAUNCHED_BY, _owner())
        return trial

    def _run_batch(self, study: Any, batch: list, space: dict, fixed: list[str]) -> None:
        from hydra_plugins.lab_optuna_sweeper.space import override_value

        overrides = [tuple([*(f"{k}={override_value(t.params[k])}" for k in space), *fixed]) for t in batch]
        returns: list = []
        start = 0
        for end in range(1, len(batch) + 1):  # job index = trial number: one launch per consecutive run
            if end == len(batch) or batch[end].number != batch[end - 1].number + 1:
                returns += list(self.launcher.launch(overrides[start:end], initial_job_idx=batch[start].number))
                start = end
        failed = [ret for trial, ret in zip(batch, returns) if not self._tell(study, trial, ret)]
        if failed and len(failed) / len(returns) > float(self.max_failure_rate):
            _say(f"optuna: {len(failed)} of {len(returns)} trials of the batch failed, above "
                 f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: the search stops")
            failed[0].return_value  # noqa: B018 - JobReturn raises the job's own exception

    def _tell(self, study: Any, trial: Any, ret: Any) -> bool:
        """Tell Optuna how the trial's job ended; False when it failed."""
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        job_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) if ret.hydra_cfg else None
        if job_dir:
            trial.set_user_attr(db.JOB_DIR, str(job_dir))
        if ret.status != JobStatus.COMPLETED:
            error = _job_error(ret, job_dir)
            trial.set_user_attr(db.ERROR_ATTR, error)
            study.tell(trial, state=TrialState.FAIL)
            _say(f"optuna: trial {trial.number} FAIL: {error}")
            return False
        latest = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if t.number == trial.number), None)
        pruned_at = latest.user_attrs.get(db.PRUNED_AT) if latest is not None else None
        if pruned_at is not None:
            told = study.tell(trial, state=TrialState.PRUNED)
            _say(f"optuna: trial {trial.number} PRUNED at epoch {pruned_at} (value {_fmt(told.value)})")
            return True
        value = ret.return_value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            error = f"the job returned no finite objective value (got {value!r})"
            trial.set_user_attr(db.ERROR_ATTR, error)
            study.tell(trial, state=TrialState.FAIL)
            _say(f"optuna: trial {trial.number} FAIL: {error}")
            return False
        study.tell(trial, number)
        _say(f"optuna: trial {trial.number} COMPLETE, value {_fmt(number)}")
        return True

    def _write_results(self, study: Any, url: str) -> None:
        from optuna.trial import TrialState

        from lab.runs.folder import OPTUNA_RESULTS

        record = db.Study(study.study_name, url, self.direction, [
            db.TrialRow(t.number, t.state.name, t.value, t.params) for t in study.get_trials(deepcopy=False)])
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            _say(f"optuna: study {study.study_name}: {record.summary()}; no trial COMPLETE, so no best trial "
                 f"({OPTUNA_RESULTS} not written)")
            return
        best = study.best_trial
        results = {"name": "optuna", "study_name": study.study_name, "storage": url, "best_trial": best.number,
                   "best_params": dict(best.params), "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / OPTUNA_RESULTS)
        _say(f"optuna: study {study.study_name}: {record.summary()}; best trial {best.number}, value "
             f"{_fmt(best.value)}; every trial: python -m lab.report {self.sweep_dir}; dashboard: "
             f"optuna-dashboard {url}")

    # --- sampler and pruner ------------------------------------------------------------
    def _sampler(self, offset: int) -> Any:
        """The sampler; with a seed, seed + `offset` (the trials already in a resumed study)."""
        cfg = dict(self.sampler_cfg or {"_target_": "optuna.samplers.TPESampler"})
        if cfg.get("seed") is not None and offset:
            cfg["seed"] = int(cfg["seed"]) + offset
        return db.build(cfg, "hydra.sweeper.sampler")

    def _pruner(self) -> Any:
        return db.build_pruner(self.pruner_cfg)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _space_json(space: dict) -> dict[str, str]:
    """The search space as the study records it: readable in optuna-dashboard, compared on resume."""
    return {key: repr(dist) for key, dist in space.items()}


def _difference(saved: Any, now: Any, verb: str) -> str | None:
    """How the study's recorded search differs from this command's, in a few words (None: the same)."""
    if saved is None or saved == now:
        return None
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = [k for k in {**saved, **now} if saved.get(k) != now.get(k)]
        return f"{verb} {', '.join(keys)} differently"
    gone = [x for x in saved if x not in now]
    new = [x for x in now if x not in saved]
    return f"{verb} {' '.join(gone) or '(nothing else)'}, this command with {' '.join(new) or '(nothing else)'}"


def _suggest(trial: Any, key: str, distribution: Any) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(key, distribution.low, distribution.high, step=distribution.step,
                                   log=distribution.log)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_categorical(key, distribution.choices)


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _live_owner(owner: Any) -> int | None:
    """The pid of the live lab process on this host that launched a trial (None: gone, or elsewhere)."""
    host, _, pid_text = str(owner or "").rpartition(" ")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a reused pid of some other program does not count
        try:
            return pid if b"lab" in cmdline.read_bytes() else None
        except OSError:
            return pid
    return pid


def _job_error(ret: Any, job_dir: str | None) -> str:
    """A failed job's error: the first line lab.run left in its error.json, else the exception's."""
    import json

    from lab.runs.folder import ERROR

    try:
        return _one_line(json.loads((Path(str(job_dir)) / ERROR).read_text()).get("error")) or "the job failed"
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    try:
        ret.return_value  # noqa: B018 - JobReturn raises the job's exception
    except Exception as err:  # noqa: BLE001 - any exception of the job is its error
        return _one_line(err) or type(err).__name__
    return "the job failed"


def _one_line(value: Any) -> str:
    lines = [line.strip() for line in str(value or "").splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else ""


def _fmt(value: Any) -> str:
    return "none" if value is None else f"{value:.6g}"


def _say(line: str) -> None:
    from lab.utils.console import console

    console.print(line, markup=False, highlight=False, soft_wrap=True)
