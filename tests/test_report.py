"""lab.report on sweep folders built by hand: every status, column choice, sort, plot and bad input.

The folders have the layout `python -m lab.run -m` leaves (multirun.yaml, <job>/.hydra/overrides.yaml,
metrics.json or error.json); tests/test_report_e2e.py checks that layout against a real sweep.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.config.objective import Objective
from lab.results import ReportError, best_job, build_table, expand_overrides, figure, load_sweep, plot
from lab.results.cli import main
from lab.results.table import FALLBACK_METRICS
from tests.conftest import ROOT, compose

METRICS = {"val/loss": 0.5, "val/top1": 0.8, "val/top5": 0.99, "val/top1_best": 0.81, "test/loss": 0.55,
           "test/top1": 0.79, "test/top5": 0.98, "train/loss": 0.3, "epochs": 3, "wall_time_s": 12.345,
           "seed": 42, "best_epoch": 2}


def make_sweep(path: Path, command: list[str], jobs: dict[int, dict], params: dict | None = None,
               sweeper: str = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
               config: dict | None = None) -> Path:
    """A sweep folder: jobs maps a job number to its overrides and one of metrics / error / raw metrics text
    (and optionally "config", its .hydra/config.yaml); `config` goes into multirun.yaml beside `hydra:`.

    A job without "metrics", "error" or "raw" has only .hydra/ (started, no result yet); a number absent from
    `jobs` has no folder (not started).
    """
    path.mkdir(parents=True, exist_ok=True)
    multirun = {"hydra": {"sweep": {"dir": str(path), "subdir": "${hydra.job.num}"},
                          "sweeper": {"_target_": sweeper, "max_batch_size": None, "params": params},
                          "overrides": {"hydra": [f"hydra.sweep.dir={path}", "hydra.mode=MULTIRUN"],
                                        "task": command},
                          "run": {"dir": "${paths.output_root}/runs/${now:%Y-%m-%d_%H-%M-%S}_${name}"}},
                "seed": 42, **(config or {})}
    (path / "multirun.yaml").write_text(yaml.safe_dump(multirun, sort_keys=False))
    for num, job in jobs.items():
        folder = path / str(num)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(job["overrides"]))
        if "metrics" in job:
            (folder / "metrics.json").write_text(json.dumps(job["metrics"]))
        if "raw" in job:
            (folder / "metrics.json").write_text(job["raw"])
        if "error" in job:
            (folder / "error.json").write_text(json.dumps({"status": "failed", **job["error"]}))
        if "config" in job:
            (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(job["config"]))
    return path


LR_DROPOUT = ["optimizer.lr=0.1,0.01", "model.dropout=0.0,0.5", "trainer.max_epochs=3"]


def job_overrides(lr: str, dropout: str) -> list[str]:
    return [f"optimizer.lr={lr}", f"model.dropout={dropout}", "trainer.max_epochs=3"]


@pytest.fixture
def partial_sweep(tmp_path) -> Path:
    """2x2 sweep: job 0 finished, job 1 failed, job 2 started (running or killed), job 3 not started."""
    return make_sweep(tmp_path / "sweep", LR_DROPOUT, {
        0: {"overrides": job_overrides("0.1", "0.0"), "metrics": METRICS},
        1: {"overrides": job_overrides("0.1", "0.5"),
            "error": {"error": "model.dropout must be in [0, 1), got 1.5", "type": "InstantiationException"}},
        2: {"overrides": job_overrides("0.01", "0.0")},
    })


def test_every_expected_job_is_a_row_with_its_status(partial_sweep):
    sweep = load_sweep(partial_sweep)
    assert [(j.num, j.status, j.detail) for j in sweep.jobs] == [
        (0, "ok", ""),
        (1, "failed", "model.dropout must be in [0, 1), got 1.5"),
        (2, "missing", "no result yet (running or killed)"),
        (3, "missing", "not started"),
    ]
    assert sweep.jobs[3].dir is None and sweep.jobs[3].params == {
        "optimizer.lr": "0.01", "model.dropout": "0.5", "trainer.max_epochs": "3"}
    assert sweep.varying == ["optimizer.lr", "model.dropout"]
    assert sweep.fixed == {"trainer.max_epochs": "3"}
    assert sweep.summary() == "4 jobs: 1 ok, 1 failed, 2 missing"


def test_markdown_has_varying_parameters_as_columns_and_fixed_ones_above(partial_sweep):
    table = build_table(load_sweep(partial_sweep))
    md = table.to_markdown()
    lines = md.splitlines()
    header = ("| job | optimizer.lr | model.dropout | val/loss | val/top1 | val/top5 | test/loss | test/top1 "
              "| test/top5 | best_epoch | wall_time_s | status |")
    assert header in lines
    assert "| 0 | 0.1 | 0.0 | 0.5000 | 0.8000 | 0.9900 | 0.5500 | 0.7900 | 0.9800 | 2 | 12.3 | ok |" in lines
    assert "| 1 | 0.1 | 0.5 |  |  |  |  |  |  |  |  | failed: model.dropout must be in [0, 1), got 1.5 |" in lines
    assert lines[-1] == "| 3 | 0.01 | 0.5 |  |  |  |  |  |  |  |  | missing: not started |"
    assert "Same for every job: `trainer.max_epochs=3`" in md
    assert "Command: `python -m lab.run -m optimizer.lr=0.1,0.01 model.dropout=0.0,0.5 trainer.max_epochs=3`" in md
    assert "trainer.max_epochs |" not in md


def test_csv_keeps_every_override_full_precision_and_splits_status(partial_sweep):
    table = build_table(load_sweep(partial_sweep))
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert list(rows[0])[:4] == ["job", "optimizer.lr", "model.dropout", "trainer.max_epochs"]
    assert list(rows[0])[-3:] == ["status", "error", "dir"]
    assert rows[0]["trainer.max_epochs"] == "3" and rows[0]["wall_time_s"] == "12.345"
    assert [(r["status"], r["error"], r["dir"]) for r in rows] == [
        ("ok", "", "0"), ("failed", "model.dropout must be in [0, 1), got 1.5", "1"),
        ("missing", "no result yet (running or killed)", "2"), ("missing", "not started", "")]


def test_cli_prints_the_table_and_writes_md_and_csv(partial_sweep, capsys):
    assert main([str(partial_sweep)]) == 0
    out = capsys.readouterr().out
    assert "missing: not started" in out and "0.7900" in out
    assert (partial_sweep / "table.md").read_text() == build_table(load_sweep(partial_sweep)).to_markdown()
    assert (partial_sweep / "table.csv").read_text().startswith("job,optimizer.lr,model.dropout,")
    assert not list(partial_sweep.glob(".table.*"))  # no temp files left by the atomic writes


@pytest.mark.parametrize("arguments", [
    ["optimizer.lr=0.1,0.01", "model.dropout=0.0,0.5", "trainer.max_epochs=3"],
    ["seed=range(3)", "+extra=a,b", "data.batch_size=32"],
    ["model.dropout=0,0.1", "optimizer.lr=1e-3,1e-2", "model.dropout=0.3,0.4", "x=[1,2],[3,4]"],
    ["optimizer.lr=choice(0.1,0.2)", "name='a,b'"],
])
def test_job_order_is_hydra_basic_sweepers(arguments):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)[0]
    assert expand_overrides(arguments) == hydra_jobs


def test_sweep_file_params_come_first_like_in_hydra(tmp_path):
    # `python -m lab.run -m sweep=dropout optimizer.lr=0.1,0.01`: the sweep file sets hydra.sweeper.params
    path = make_sweep(tmp_path / "s", ["sweep=dropout", "optimizer.lr=0.1,0.01"], {},
                      params={"model.dropout": "0.0,0.2,0.5"})
    sweep = load_sweep(path)
    assert [j.overrides for j in sweep.jobs][:3] == [
        ["model.dropout=0.0", "sweep=dropout", "optimizer.lr=0.1"],
        ["model.dropout=0.0", "sweep=dropout", "optimizer.lr=0.01"],
        ["model.dropout=0.2", "sweep=dropout", "optimizer.lr=0.1"]]
    assert len(sweep.jobs) == 6 and all(j.status == "missing" for j in sweep.jobs)
    assert sweep.varying == ["model.dropout", "optimizer.lr"]


def test_glob_over_a_config_group_is_expanded_with_the_config_folder(tmp_path):
    path = make_sweep(tmp_path / "s", ["optimizer=glob(adam*)"], {})
    assert [j.overrides for j in load_sweep(path).jobs] == [["optimizer=adam"], ["optimizer=adamw"]]


def test_corrupt_partial_or_odd_results_are_failed_jobs(tmp_path):
    path = make_sweep(tmp_path / "s", ["seed=0,1,2,3,4"], {
        0: {"overrides": ["seed=0"], "raw": '{"val/top1": 0.9, "test/to'},
        1: {"overrides": ["seed=1"], "raw": "[1, 2]"},
        2: {"overrides": ["seed=2"], "error": {"error": "'data'\nsecond line", "type": "KeyError"}},
        3: {"overrides": ["seed=3"], "raw": "{not json"},
        4: {"overrides": ["seed=4"], "metrics": {"val/top1": 0.5}},
    })
    (path / "3" / "error.json").write_text("{")
    jobs = load_sweep(path).jobs
    assert jobs[0].status == "failed" and jobs[0].detail.startswith("unreadable metrics.json (")
    assert jobs[1].detail == "unreadable metrics.json (a JSON list, not an object)"
    assert jobs[2].status_text == "failed: KeyError: 'data'"  # a crash's bare message gets its type
    assert jobs[3].status == "failed" and jobs[3].detail.startswith("unreadable error.json")
    assert jobs[4].status == "ok"
    md = build_table(load_sweep(path)).to_markdown()
    assert "| 0 | 0 |  | failed: unreadable metrics.json (Unterminated string" in md


def test_nan_is_shown_and_sorts_last(tmp_path):
    path = make_sweep(tmp_path / "s", ["optimizer.lr=1,0.1,0.01"], {
        0: {"overrides": ["optimizer.lr=1"], "metrics": {**METRICS, "val/loss": "nan", "val/top1": "nan"}},
        1: {"overrides": ["optimizer.lr=0.1"], "metrics": {**METRICS, "val/top1": 0.7}},
        2: {"overrides": ["optimizer.lr=0.01"], "metrics": {**METRICS, "val/top1": 0.9}},
    })
    sweep = load_sweep(path)
    assert math.isnan(sweep.jobs[0].metrics["val/loss"])
    table = build_table(sweep, sort="val/top1")
    assert [j.num for j in table.jobs] == [2, 1, 0]
    assert "| 0 | 1 | nan | nan |" in table.to_markdown()
    assert "nan" in table.to_csv().splitlines()[3]


def test_sort_best_first_by_metric_ascending_by_parameter(partial_sweep):
    path = make_sweep(partial_sweep.parent / "full", LR_DROPOUT, {
        i: {"overrides": job_overrides(lr, d), "metrics": {**METRICS, "test/top1": top1, "test/loss": loss}}
        for i, (lr, d, top1, loss) in enumerate([("0.1", "0.0", 0.7, 0.3), ("0.1", "0.5", 0.9, 0.6),
                                                 ("0.01", "0.0", 0.8, 0.1), ("0.01", "0.5", 0.6, 0.9)])})
    sweep = load_sweep(path)
    by_top1 = build_table(sweep, sort="test/top1")
    assert [j.num for j in by_top1.jobs] == [1, 2, 0, 3]  # accuracy: highest first
    assert by_top1.to_markdown().startswith("Sweep `full`: 4 jobs: 4 ok, sorted by test/top1 (descending)")
    assert [j.num for j in build_table(sweep, sort="test/loss").jobs] == [2, 0, 1, 3]  # loss: lowest first
    assert [j.num for j in build_table(sweep, sort="test/loss", reverse=True).jobs] == [3, 1, 0, 2]
    assert [j.num for j in build_table(sweep, sort="optimizer.lr").jobs] == [2, 3, 0, 1]  # numeric, not text
    # metrics need not be shown to sort by them; rows without a value stay last, in launch order
    assert [j.num for j in build_table(load_sweep(partial_sweep), ["val/loss"], sort="test/top1").jobs] == [0, 1, 2, 3]
    with pytest.raises(ReportError, match=r"--sort test/top2: no such column; choose one of: job, optimizer.lr"):
        build_table(sweep, sort="test/top2")


def test_metric_columns_by_name_or_glob_and_unknown_names_are_errors(partial_sweep):
    sweep = load_sweep(partial_sweep)
    assert build_table(sweep, ["test/top1,val/top1", "wall_time_s"]).metrics == ["test/top1", "val/top1", "wall_time_s"]
    assert build_table(sweep, ["val/*"]).metrics == ["val/loss", "val/top1", "val/top5", "val/top1_best"]
    assert build_table(sweep, ["train/*", "epochs"]).columns == [
        "job", "optimizer.lr", "model.dropout", "train/loss", "epochs", "status"]
    with pytest.raises(ReportError, match=r"--metrics test/acc: no job has this metric; the jobs have: val/loss, "):
        build_table(sweep, ["test/acc"])
    with pytest.raises(ReportError, match=r"--metrics lr/\*: matches no metric"):
        build_table(sweep, ["lr/*"])


def test_regression_sweeps_get_mse_and_r2_columns(tmp_path):
    metrics = {"val/mse": 0.01, "val/r2": 0.99, "val/mse_best": 0.009, "test/mse": 0.02, "test/r2": 0.98,
               "epochs": 1000, "wall_time_s": 3.0, "seed": 0}
    path = make_sweep(tmp_path / "s", ["trainer.max_epochs=100,1000"], {
        0: {"overrides": ["trainer.max_epochs=100"], "metrics": metrics}})
    table = build_table(load_sweep(path))
    assert table.metrics == ["val/mse", "val/r2", "test/mse", "test/r2", "wall_time_s"]
    assert [j.num for j in build_table(load_sweep(path), sort="val/r2").jobs] == [0, 1]


def test_a_sweep_where_no_job_has_finished_still_has_the_standard_columns(tmp_path):
    path = make_sweep(tmp_path / "s", ["seed=0,1"], {})
    table = build_table(load_sweep(path))
    assert table.columns == ["job", "seed", *FALLBACK_METRICS, "status"]
    assert build_table(load_sweep(path), ["anything"]).metrics == ["anything"]  # nothing to check it against yet


def test_jobs_come_from_their_folders_when_the_sweeper_picks_them_as_it_runs(tmp_path):
    path = make_sweep(tmp_path / "s", ["optimizer.lr=interval(0.001,0.1)"], {
        0: {"overrides": ["optimizer.lr=0.0123"], "metrics": METRICS},
        1: {"overrides": ["optimizer.lr=0.0456"]},
    }, sweeper="hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    sweep = load_sweep(path)
    assert [(j.num, j.status) for j in sweep.jobs] == [(0, "ok"), (1, "missing")]
    assert "OptunaSweeper picks its jobs as it runs" in sweep.note
    assert "Note: jobs read from their folders" in build_table(sweep).to_markdown()


def test_a_job_with_unreadable_overrides_is_paired_by_its_number(partial_sweep):
    (partial_sweep / "2" / ".hydra" / "overrides.yaml").write_text("[unclosed")
    jobs = load_sweep(partial_sweep).jobs
    assert len(jobs) == 4 and jobs[2].dir == partial_sweep / "2"
    assert jobs[2].params["optimizer.lr"] == "0.01"
    assert jobs[2].detail.endswith("unreadable .hydra/overrides.yaml")


@pytest.mark.parametrize("case, expected", [
    ("absent", "no such folder; expected a sweep folder made by `python -m lab.run -m ...`"),
    ("empty", "is empty; expected a sweep folder"),
    ("file", "is a file, not a folder; expected a sweep folder"),
    ("run", "is one run's folder, not a sweep: no multirun.yaml"),
    ("parent", "holds 1 sweep(s), not one: pass one of them, e.g. "),
    ("other", "has no multirun.yaml; expected a sweep folder"),
    ("corrupt", "multirun.yaml: unreadable ("),
])
def test_bad_folders_are_one_line_errors_with_status_2(tmp_path, capsys, case, expected):
    target = tmp_path / case
    if case == "empty":
        target.mkdir()
    elif case == "file":
        target.write_text("x")
    elif case == "run":
        (target / ".hydra").mkdir(parents=True)
        (target / "metrics.json").write_text("{}")
    elif case == "parent":
        make_sweep(target / "2026-01-01_00-00-00_digits", ["seed=0,1"], {})
    elif case == "other":
        target.mkdir()
        (target / "notes.txt").write_text("x")
    elif case == "corrupt":
        target.mkdir()
        (target / "multirun.yaml").write_text("hydra: [unclosed\n  - x: {")
    assert main([str(target)]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error: ") and str(target) in out and expected in out
    assert "\n" not in out


def test_without_a_folder_the_newest_sweep_is_reported(tmp_path, monkeypatch, capsys):
    import os

    old = make_sweep(tmp_path / "multiruns" / "a_old", ["seed=0,1"], {})
    new = make_sweep(tmp_path / "multiruns" / "b_new", ["seed=5,6"], {})
    os.utime(old / "multirun.yaml", (1e9, 1e9))
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    assert main([]) == 0
    assert "Sweep `b_new`" in capsys.readouterr().out and (new / "table.md").exists()
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "nothing"))
    assert main([]) == 2
    assert "multiruns: no sweep found" in capsys.readouterr().out


def test_plot_one_png_per_metric_and_the_same_images_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = ["model.norm=batch,none", "optimizer.lr=0.1,0.01"]
    jobs = {i: {"overrides": [f"model.norm={n}", f"optimizer.lr={lr}"],
                "metrics": {**METRICS, "test/top1": 0.5 + i / 10}}
            for i, (n, lr) in enumerate([("batch", "0.1"), ("batch", "0.01"), ("none", "0.1")])}
    jobs[2]["metrics"]["test/loss"] = "nan"
    path = make_sweep(tmp_path / "s", command, jobs)
    table = build_table(load_sweep(path), ["test/top1", "test/loss"])
    pngs = plot(table)  # x: model.norm (categorical), one line per learning rate
    assert [p.name for p in pngs] == ["plot_test_top1.png", "plot_test_loss.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    fig = figure(build_table(load_sweep(path), sort="test/top1"), "test/top1", "model.norm")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["batch", "none"]  # categories in launch order, however the table is sorted
    plot(table, x="optimizer.lr")  # re-plotting replaces the report run rather than appending to it
    events = list((path / "report").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(path / "report"))
    accumulator.Reload()
    assert accumulator.Tags()["images"] == ["report/test/top1", "report/test/loss"]
    image = accumulator.Images("report/test/top1")[0]
    assert image.encoded_image_string == (path / "plot_test_top1.png").read_bytes() and image.width > 100
    with pytest.raises(ReportError, match="--x seed: not an overridden key"):
        plot(table, x="seed")


def test_plot_with_nothing_varying_writes_nothing(tmp_path, capsys):
    path = make_sweep(tmp_path / "s", ["seed=1"], {0: {"overrides": ["seed=1"], "metrics": METRICS}})
    assert main([str(path), "--plot"]) == 0
    assert "nothing to plot: no parameter varies across jobs" in capsys.readouterr().out
    assert not list(path.glob("*.png")) and not (path / "report").exists()


def test_importing_the_entry_point_is_light():
    """`python -m lab.report --help` and `from lab.results import ...` load no torch, Hydra, rich or matplotlib."""
    code = ("import runpy, sys, lab.results\nsys.argv = ['lab.report', '--help']\ntry:\n"
            "    runpy.run_module('lab.report', run_name='__main__')\nexcept SystemExit as exit:\n"
            "    assert exit.code == 0, exit.code\nheavy = [m for m in ('torch', 'lightning', 'matplotlib', "
            "'tensorboard', 'hydra', 'rich') if m in sys.modules]\nprint(heavy)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
    assert "usage: python -m lab.report" in result.stdout


def _optuna_sweep(path: Path, results: dict | None) -> Path:
    """An Optuna study's folder: trials 0 and 2 finished, trial 1 failed; optimization_results.yaml when ended."""
    make_sweep(path, ["hparams_search=optuna", "trainer.max_epochs=3"], {
        0: {"overrides": ["optimizer.lr=0.0013292918943162175", "model.dropout=0.1", "hparams_search=optuna"],
            "metrics": {**METRICS, "val/top1_best": 0.91}},
        1: {"overrides": ["optimizer.lr=0.00029380279387035364", "model.dropout=1.5", "hparams_search=optuna"],
            "error": {"error": "model.dropout must be in [0, 1), got 1.5", "type": "InstantiationException"}},
        2: {"overrides": ["optimizer.lr=0.006358358856676255", "model.dropout=0.1", "hparams_search=optuna"],
            "metrics": {**METRICS, "val/top1_best": 0.95}},
    }, sweeper="hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    config = yaml.safe_load((path / "multirun.yaml").read_text())
    config["hydra"]["sweeper"].update({"direction": "maximize", "n_trials": 20})
    (path / "multirun.yaml").write_text(yaml.safe_dump(config))
    if results is not None:
        (path / "optimization_results.yaml").write_text(yaml.safe_dump(results, sort_keys=False))
    return path


def test_optuna_study_best_trial_objective_first_and_short_parameters(tmp_path):
    path = _optuna_sweep(tmp_path / "study", {"name": "optuna", "best_params": {
        "optimizer.lr": 0.006358358856676255, "model.dropout": 0.1}, "best_value": 0.95})
    table = build_table(load_sweep(path))
    assert table.metrics[0] == "val/top1_best"  # the study's objective
    md = table.to_markdown()
    assert "Optuna study (maximize, 20 trials): best job 2, value 0.9500 (optimization_results.yaml)" in md
    assert "| 2 | 0.006358 | 0.1 | 0.9500 |" in md  # 4 significant digits in the tables
    assert "| 1 | 0.0002938 | 1.5 |" in md and "failed: model.dropout must be in [0, 1), got 1.5 |" in md
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert rows[2]["optimizer.lr"] == "0.006358358856676255"  # full precision for machines


def test_optuna_study_still_running_or_without_multirun_yaml(tmp_path, monkeypatch, capsys):
    running = _optuna_sweep(tmp_path / "multiruns" / "a_running", None)
    assert "Optuna study (maximize, 20 trials): running or stopped" in build_table(load_sweep(running)).to_markdown()
    # a study made without lab's callback: no multirun.yaml, only the sweeper's results
    bare = _optuna_sweep(tmp_path / "multiruns" / "b_bare", {"name": "optuna", "best_params": {}, "best_value": 0.9})
    (bare / "multirun.yaml").unlink()
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "Sweep `b_bare`: 3 jobs: 2 ok, 1 failed" in out and "OptunaSweeper picks its jobs" in out


def test_a_narrow_terminal_still_shows_the_status(tmp_path):
    from rich.console import Console

    path = _optuna_sweep(tmp_path / "study", None)
    console = Console(width=90, record=True, force_terminal=False)
    console.print(build_table(load_sweep(path)).to_rich(console))
    assert "failed: model.dropout" in console.export_text()


# --- the objective (task.objective) ranks the jobs ---------------------------------------------
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
REGRESSION = {"task": {"_target_": "lab.tasks.regression.RegressionTask",
                       "objective": {"metric": "val/mse", "mode": "min"}}}
MSE = {"val/mse": 0.02, "val/r2": 0.9, "test/mse": 0.03, "test/r2": 0.88, "epochs": 1000, "wall_time_s": 3.0,
       "seed": 0}


def test_a_regression_objective_ranks_the_lowest_val_mse_best_first(tmp_path):
    """task.objective {metric: val/mse, mode: min} in multirun.yaml: job 1, with the lowest val/mse_best, is
    the best (the last val/mse would pick job 0); the default objective (val/top1, max) would pick job 0."""
    path = make_sweep(tmp_path / "s", ["optimizer.lr=0.1,0.01,0.001"], {
        i: {"overrides": [f"optimizer.lr={lr}"], "metrics": {**MSE, "val/mse": last, "val/mse_best": best,
                                                             "val/top1_best": 0.9 - i / 10}}
        for i, (lr, last, best) in enumerate([("0.1", 0.004, 0.02), ("0.01", 0.03, 0.005), ("0.001", 0.02, 0.01)])},
        config=REGRESSION)
    sweep = load_sweep(path)
    assert sweep.objective == Objective("val/mse", "min")
    assert best_job(sweep).num == 1
    assert [j.num for j in build_table(sweep, sort="val/mse_best").jobs] == [1, 2, 0]
    assert [j.num for j in build_table(sweep, sort="val/mse_best", reverse=True).jobs] == [0, 2, 1]
    (path / "multirun.yaml").write_text((path / "multirun.yaml").read_text().replace("task:", "other:"))
    assert load_sweep(path).objective == Objective() and best_job(load_sweep(path)).num == 0


def test_an_optuna_study_of_a_regression_task_minimizes_its_objective(tmp_path):
    """The study's column, direction and best trial follow task.objective (val/mse_best, min), not val/top1_best;
    lab's optuna config records its direction as an interpolation of the objective's mode."""
    jobs = {i: {"overrides": [f"optimizer.lr={lr}", "hparams_search=optuna"], "config": REGRESSION,
                "metrics": {**MSE, "val/mse_best": best}}
            for i, (lr, best) in enumerate([("0.01", 0.02), ("0.02", 0.005), ("0.03", 0.01)])}
    path = make_sweep(tmp_path / "study", ["hparams_search=optuna", "experiment=mlp_function"], jobs,
                      sweeper=OPTUNA, config=REGRESSION)
    config = yaml.safe_load((path / "multirun.yaml").read_text())
    config["hydra"]["sweeper"].update({"direction": "${lab_direction:${task.objective.mode}}", "n_trials": 3})
    (path / "multirun.yaml").write_text(yaml.safe_dump(config))
    table = build_table(load_sweep(path))
    assert table.metrics[0] == "val/mse_best"
    assert ("Optuna study (minimize, 3 trials): running or stopped (optimization_results.yaml is written when the "
            "study ends); best so far: job 1, val/mse_best 0.0050") in table.to_markdown()
    results = {"name": "optuna", "best_params": {"optimizer.lr": 0.02}, "best_value": 0.005}
    (path / "optimization_results.yaml").write_text(yaml.safe_dump(results))
    md = build_table(load_sweep(path)).to_markdown()
    assert "Optuna study (minimize, 3 trials): best job 1, value 0.0050 (optimization_results.yaml)" in md
    (path / "multirun.yaml").unlink()  # a study made without lab's callback: the objective of a job's config
    sweep = load_sweep(path)
    assert sweep.objective == Objective("val/mse", "min") and build_table(sweep).metrics[0] == "val/mse_best"


def test_a_malformed_objective_is_a_one_line_error(tmp_path, capsys):
    path = make_sweep(tmp_path / "s", ["seed=0,1"], {}, config={"task": {"objective": {"metric": "mse"}}})
    assert main([str(path)]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"error: {path / 'multirun.yaml'}: task.objective.metric must be a validation metric")


def test_optuna_on_a_regression_task_is_checked_against_its_objective_not_refused():
    """lab.results.sweep_status: every task returns its objective, so regression may be searched; a direction
    opposite to the objective's mode stops before the first trial."""
    from lab.results.sweep_status import optuna_problem

    assert optuna_problem(compose(["hparams_search=optuna", "experiment=mlp_function"])) is None
    problem = optuna_problem(compose(["hparams_search=optuna", "experiment=mlp_function",
                                      "hydra.sweeper.direction=maximize"]))
    assert problem.startswith("hydra.sweeper.direction=maximize, but lab.run returns val/mse_best"), problem
