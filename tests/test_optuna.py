"""lab's Optuna sweeper (hydra_plugins.lab_optuna_sweeper) on Optuna 4+: Hydra's sweep syntax, the study in
SQLite in the sweep folder, a search killed with SIGKILL and resumed by the same command, pruning through
lab.callbacks.pruning, and lab.report's trial list read from optuna.db.

tests/test_launchers.py runs a short search with a failing and a pruned trial (default tier).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.lab_optuna_sweeper.space import search_space
from hydra_plugins.lab_optuna_sweeper.sweeper import LabOptunaSweeper
from lab.errors import ConfigError
from lab.results.trials import open_storage, storage_url
from tests.conftest import ROOT

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    space, fixed = search_space([
        "optimizer.lr=tag(log, interval(1e-4, 1e-1))", "model.dropout=interval(0.0, 0.5)",
        "data.batch_size=choice(32,64,128)", "model.depth=range(2,9,2)", "trainer.max_epochs=range(1,4)",
        "model.width=tag(log, range(16, 257))", "x.f=range(0.1,0.5,0.1)", "x.s=shuffle(range(3))",
        "seed=3", "+extra=1", "model.dropout=0.2",  # a plain value takes a key out of the search
    ])
    assert space == {
        "optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
        "data.batch_size": CategoricalDistribution([32, 64, 128]),
        "model.depth": IntDistribution(2, 8, step=2),  # Hydra's range stops before its end
        "trainer.max_epochs": IntDistribution(1, 3),
        "model.width": IntDistribution(16, 256, log=True),
        "x.f": FloatDistribution(0.1, 0.4, step=0.1),
        "x.s": CategoricalDistribution([0, 1, 2]),
    }
    assert fixed == ["seed=3", "+extra=1", "model.dropout=0.2"]
    for bad, expected in [("model=glob(*)", "Optuna cannot search a glob over config options"),
                          ("a=tag(log, range(1, 10, 2))", "a log range takes no step"),
                          ("a=range(5, 1)", "the range is empty"), ("a=choice(", "cannot parse")]:
        with pytest.raises(ConfigError, match=r"^" + bad.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")
                           + ".*" + expected):
            search_space([bad])


def _sweeper(tmp_path: Path, direction: str = "maximize") -> LabOptunaSweeper:
    sweeper = LabOptunaSweeper(sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0}, pruner=None,
                               direction=direction, study_name="s", storage=None, n_trials=3, n_jobs=1,
                               max_failure_rate=1.0, params={"optimizer.lr": "interval(0.1, 0.2)"})
    sweeper.sweep_dir = tmp_path
    return sweeper


def test_a_resumed_study_must_be_the_same_search(tmp_path):
    """Resuming checks the study in optuna.db against the command: the same direction, search space and
    fixed arguments; a folder with job folders but no study is not a study to resume."""
    sweeper = _sweeper(tmp_path)
    space, fixed = search_space(["optimizer.lr=interval(0.1, 0.2)", "trainer.max_epochs=3"])
    storage = open_storage(storage_url(tmp_path))
    assert sweeper._earlier_trials(optuna, storage, "s", space, fixed) == []
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("lab_search_space", {"optimizer.lr": repr(space["optimizer.lr"])})  # as the sweeper does
    study.set_user_attr("lab_fixed_overrides", ["trainer.max_epochs=3"])
    study.enqueue_trial({"optimizer.lr": 0.15})
    assert [t.number for t in sweeper._earlier_trials(optuna, storage, "s", space, fixed)] == [0]

    with pytest.raises(ConfigError, match=r"was made by another search: it runs with trainer.max_epochs=3, this "
                                          r"command with trainer.max_epochs=5; run the same command"):
        sweeper._earlier_trials(optuna, storage, "s", space, ["trainer.max_epochs=5"])
    other, _ = search_space(["optimizer.lr=interval(0.1, 0.3)"])
    with pytest.raises(ConfigError, match=r"it searches optimizer.lr differently"):
        sweeper._earlier_trials(optuna, storage, "s", other, fixed)
    with pytest.raises(ConfigError, match=r"is to maximize, not hydra.sweeper.direction=minimize"):
        _sweeper(tmp_path, "minimize")._earlier_trials(optuna, storage, "s", space, fixed)
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"already holds job folders \(0\) but no study t in its storage"):
        sweeper._earlier_trials(optuna, storage, "t", space, fixed)


def _finished(db: Path) -> list:
    if not db.is_file():
        return []
    try:
        study = optuna.load_study(study_name="killed", storage=open_storage(f"sqlite:///{db}", read_only=True))
    except Exception:  # noqa: BLE001 - the sweeper is still creating the file or its tables
        return []
    return study.get_trials(states=FINISHED)


@pytest.mark.slow  # two lab.run processes of 3-4 trials each: ~60 s on 2 cores
def test_search_killed_after_3_trials_resumes_with_the_same_command_and_loses_none(tmp_path):
    """The issue's acceptance: 6 trials with a median pruner stored in SQLite, SIGKILL once 3 have finished,
    the same command again: 6 trials 0-5, the first 3 unchanged, some PRUNED (each where the median pruner
    says so), a trial the kill interrupted run again with its parameters; lab.report lists them all."""
    sweep = tmp_path / "study"
    db = sweep / "optuna.db"
    command = [sys.executable, "-m", "lab.run", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=6",
               "hydra.sweeper.study_name=killed", "hydra.sweeper.pruner.n_startup_trials=1",
               "trainer.max_epochs=3", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
               "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while len(_finished(db)) < 3 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    storage = open_storage(f"sqlite:///{db}", read_only=True)
    before = optuna.load_study(study_name="killed", storage=storage).get_trials()
    done = [t for t in before if t.state in FINISHED]
    assert 3 <= len(done) < 6, [t.state for t in before]
    interrupted = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert f"resumed with {len(done)} finished trial(s), {len(interrupted)} to run again" in second.stdout
    trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state in FINISHED for t in trials), [t.state for t in trials]
    for old in done:  # nothing the first launch finished is lost or changed
        new = trials[old.number]
        assert (new.state, new.value, new.params) == (old.state, old.value, old.params)
    for old in interrupted:  # run again with the same number and parameters
        assert trials[old.number].params == old.params
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == [str(n) for n in range(6)]

    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.number, t.state.name, t.intermediate_values) for t in trials]
    for trial in pruned:  # the median pruner's rule, from the reported epochs of the trials finished before it
        step = max(trial.intermediate_values)
        earlier = [t.intermediate_values[step] for t in trials
                   if t.state == optuna.trial.TrialState.COMPLETE and t.number < trial.number
                   and step in t.intermediate_values]
        assert earlier and max(trial.intermediate_values.values()) < float(np.percentile(earlier, 50))
        assert trial.user_attrs["pruned_at_epoch"] == step  # and the run stopped there:
        assert json.loads((sweep / str(trial.number) / "metrics.json").read_text())["epochs"] == step + 1

    report = subprocess.run([sys.executable, "-m", "lab.report", str(sweep)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    counts = ", ".join(f"{n} {s}" for s, n in {t.state.name: sum(u.state == t.state for u in trials)
                                                for t in trials}.items())
    assert f"Optuna study `killed` (maximize val/top1_best) in optuna.db: 6 trials: {counts}" in report.stdout
    rows = list(csv.DictReader((sweep / "trials.csv").open()))
    assert [(r["trial"], r["state"]) for r in rows] == [(str(t.number), t.state.name) for t in trials]
    assert "ok, pruned at epoch" in report.stdout
