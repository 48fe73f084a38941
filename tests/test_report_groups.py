"""lab.report on a sweep that ran each configuration with several seeds: one row per configuration with
mean ± std and n, the per-job rows in jobs.md/jobs.csv, sorting by the mean, error bars on the plots, the
best configuration by its mean; and a real `seed=0,1` sweep reported end to end.

The hand-made folders have the on-disk layout of `python -m lab.run -m` (tests/test_report.py's make_sweep).
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lab.results import (
    ReportError,
    best_job,
    build_table,
    figure,
    group_jobs,
    group_table,
    has_replicates,
    load_sweep,
    plot,
)
from lab.results.cli import main
from tests.conftest import ROOT, run_cli
from tests.test_report import METRICS, make_sweep

COMMAND = ["optimizer.lr=0.1,0.01", "seed=0,1,2", "trainer.max_epochs=3"]
ERROR = "non-finite training loss (nan) at step 7"
# val/top1 of each job, in Hydra's order (lr=0.1: seeds 0-2, then lr=0.01: seeds 0-2); job 4 fails.
# lr=0.1 has the single best job (0.95) but lr=0.01 the best mean: the best line must follow the mean.
TOP1 = {0: 0.80, 1: 0.95, 2: 0.70, 3: 0.86, 5: 0.90}
LOSS = {0: 0.61, 1: 0.42, 2: 0.75, 3: 0.40, 5: 0.33}
LR = {0: "0.1", 1: "0.1", 2: "0.1", 3: "0.01", 4: "0.01", 5: "0.01"}


def overrides(num: int) -> list[str]:
    return [f"optimizer.lr={LR[num]}", f"seed={num % 3}", "trainer.max_epochs=3"]


def metrics(num: int) -> dict:
    return {**METRICS, "val/top1": TOP1[num], "val/top1_best": TOP1[num] + 0.01, "val/loss": LOSS[num],
            "test/top1": TOP1[num] - 0.02, "wall_time_s": 10.0 + num, "seed": num % 3}


@pytest.fixture
def seed_sweep(tmp_path) -> Path:
    """2 learning rates x 3 seeds; job 4 (lr=0.01, seed=1) failed."""
    jobs = {num: {"overrides": overrides(num), "metrics": metrics(num)} for num in TOP1}
    jobs[4] = {"overrides": overrides(4), "error": {"error": ERROR, "type": "NonFiniteLossError"}}
    return make_sweep(tmp_path / "seeds", COMMAND, jobs)


def expected(num_jobs: list[int], values: dict[int, float]) -> tuple[float, float, int]:
    finished = [values[j] for j in num_jobs if j in values]
    return statistics.mean(finished), statistics.stdev(finished), len(finished)


def test_one_group_per_configuration_with_mean_std_and_n(seed_sweep):
    sweep = load_sweep(seed_sweep)
    assert sweep.varying == ["optimizer.lr", "seed"] and has_replicates(sweep.jobs, sweep.varying)
    grouped = group_table(build_table(sweep))
    assert grouped is not None and grouped.params == ["optimizer.lr"]
    assert [g.params for g in grouped.groups] == [{"optimizer.lr": "0.1"}, {"optimizer.lr": "0.01"}]
    assert [[j.num for j in g.jobs] for g in grouped.groups] == [[0, 1, 2], [3, 4, 5]]
    for group, nums in zip(grouped.groups, ([0, 1, 2], [3, 4, 5])):
        mean, std, n = group.stats("val/top1")
        assert (mean, std, n) == pytest.approx(expected(nums, TOP1), rel=1e-12)
        assert group.stats("val/loss") == pytest.approx(expected(nums, LOSS), rel=1e-12)
    assert grouped.columns == ["optimizer.lr", "val/loss", "val/top1", "val/top5", "test/loss", "test/top1",
                               "test/top5", "best_epoch", "wall_time_s", "n", "status"]
    first, second = (grouped.cells(g) for g in grouped.groups)
    mean, std, _ = expected([0, 1, 2], TOP1)
    assert first[2] == f"{mean:.4f} ± {std:.4f}" and first[-2:] == ["3", "3 ok"]
    mean, std, _ = expected([3, 4, 5], TOP1)
    assert second[2] == f"{mean:.4f} ± {std:.4f}"
    assert second[-2:] == ["2", f"2 ok, 1 failed: {ERROR}"]
    assert first[8] == f"{statistics.mean([10, 11, 12]):.1f} ± {statistics.stdev([10, 11, 12]):.1f}"  # seconds


def test_markdown_is_grouped_and_names_the_best_configuration_by_its_mean(seed_sweep):
    sweep = load_sweep(seed_sweep)
    md = group_table(build_table(sweep)).to_markdown()
    lines = md.splitlines()
    assert lines[0].startswith("Sweep `seeds`: 6 jobs: 5 ok, 1 failed; 2 configurations × 3 runs (seed)")
    assert ("| optimizer.lr | val/loss | val/top1 | val/top5 | test/loss | test/top1 | test/top5 | best_epoch "
            "| wall_time_s | n | status |") in lines
    mean, std, _ = expected([3, 4, 5], TOP1)
    assert lines[-1].startswith(f"| 0.01 | {expected([3, 4, 5], LOSS)[0]:.4f} ± ")
    assert f"| {mean:.4f} ± {std:.4f} |" in lines[-1] and lines[-1].endswith(f"| 2 | 2 ok, 1 failed: "
                                                                              f"{ERROR} |")
    assert best_job(sweep).num == 1  # the best single run is lr=0.1's ...
    best_top1 = {j: v + 0.01 for j, v in TOP1.items()}
    mean, std, _ = expected([3, 4, 5], best_top1)
    # ... the best mean lr=0.01's
    assert f"Best by val/top1_best (mean): optimizer.lr=0.01, {mean:.4f} ± {std:.4f} (n=2)" in md
    assert "Same for every job: `trainer.max_epochs=3`" in md
    assert "one row per job in jobs.md and jobs.csv" in md


def test_cli_writes_the_grouped_table_and_the_per_job_rows(seed_sweep, capsys):
    assert main([str(seed_sweep)]) == 0
    out = capsys.readouterr().out
    assert "2 ok, 1 failed" in out and "± " in out and "jobs.csv" in out
    sweep = load_sweep(seed_sweep)
    per_job = build_table(sweep)
    assert (seed_sweep / "table.md").read_text() == group_table(per_job).to_markdown()
    assert (seed_sweep / "jobs.md").read_text() == per_job.to_markdown()
    assert (seed_sweep / "jobs.csv").read_text() == per_job.to_csv()
    jobs = list(csv.DictReader((seed_sweep / "jobs.csv").open()))
    assert [(r["job"], r["optimizer.lr"], r["seed"], r["status"]) for r in jobs] == [
        (str(j), LR[j], str(j % 3), "failed" if j == 4 else "ok") for j in range(6)]

    rows = list(csv.DictReader((seed_sweep / "table.csv").open()))
    assert list(rows[0])[:4] == ["optimizer.lr", "trainer.max_epochs", "val/loss", "val/loss_std"]
    assert list(rows[0])[-5:] == ["n", "status", "error", "jobs", "seeds"]
    assert "val/top1" in rows[0] and "val/top1_std" in rows[0] and "seed" not in rows[0]
    for row, nums in zip(rows, ([0, 1, 2], [3, 4, 5])):
        mean, std, n = expected(nums, TOP1)
        assert float(row["val/top1"]) == pytest.approx(mean, rel=1e-15)  # full precision
        assert float(row["val/top1_std"]) == pytest.approx(std, rel=1e-15)
        assert row["n"] == str(n) and row["jobs"] == " ".join(map(str, nums)) and row["seeds"] == "0 1 2"
    assert (rows[0]["status"], rows[0]["error"]) == ("3 ok", "")
    assert (rows[1]["status"], rows[1]["error"]) == ("2 ok, 1 failed", f"{ERROR}")


def test_sort_ranks_configurations_by_their_mean(seed_sweep, capsys):
    sweep = load_sweep(seed_sweep)

    def order(sort, reverse=False):
        grouped = group_table(build_table(sweep, sort=sort, reverse=reverse), sort, reverse)
        return [g.params["optimizer.lr"] for g in grouped.groups], grouped.sort

    assert order("val/top1") == (["0.01", "0.1"], ("val/top1", False))  # highest mean first
    assert order("val/top1", reverse=True) == (["0.1", "0.01"], ("val/top1", True))
    assert order("val/loss") == (["0.01", "0.1"], ("val/loss", True))  # lowest mean first
    assert order("optimizer.lr") == (["0.01", "0.1"], ("optimizer.lr", True))
    assert order("job") == (["0.1", "0.01"], ("job", True))
    grouped = group_table(build_table(sweep, sort="val/top1"), "val/top1")
    assert "sorted by val/top1 mean (descending)" in grouped.to_markdown().splitlines()[0]
    with pytest.raises(ReportError, match="--sort seed: each row holds every seed"):
        group_table(build_table(sweep, sort="seed"), "seed")
    assert main([str(seed_sweep), "--sort", "seed"]) == 2
    assert "--sort seed" in capsys.readouterr().out


def test_a_configuration_without_a_value_sorts_last_and_partial_means_say_n(tmp_path):
    command = ["optimizer.lr=0.1,0.01,0.001", "seed=0,1"]
    jobs = {0: {"overrides": ["optimizer.lr=0.1", "seed=0"], "metrics": {**METRICS, "val/top1": 0.5}},
            1: {"overrides": ["optimizer.lr=0.1", "seed=1"], "metrics": {**METRICS, "val/top1": "nan"}},
            2: {"overrides": ["optimizer.lr=0.01", "seed=0"], "metrics": {**METRICS, "val/top1": 0.7}},
            3: {"overrides": ["optimizer.lr=0.01", "seed=1"], "metrics": {**METRICS, "val/top1": 0.6}},
            4: {"overrides": ["optimizer.lr=0.001", "seed=0"], "error": {"error": "boom", "type": "ValueError"}}}
    path = make_sweep(tmp_path / "s", command, jobs)  # job 5 never started
    sweep = load_sweep(path)
    grouped = group_table(build_table(sweep, sort="val/top1"), "val/top1")
    assert [g.params["optimizer.lr"] for g in grouped.groups] == ["0.01", "0.1", "0.001"]
    cells = {g.params["optimizer.lr"]: grouped.cells(g) for g in grouped.groups}
    top1 = grouped.columns.index("val/top1")
    assert cells["0.1"][top1] == "0.5000 (n=1)" and cells["0.1"][-2:] == ["2", "2 ok"]  # one run: no std
    assert cells["0.001"][top1] == "" and cells["0.001"][-2:] == ["0", "1 missing, 1 failed: boom"]
    rows = list(csv.DictReader(io.StringIO(grouped.to_csv())))
    assert [(r["val/top1"], r["val/top1_std"], r["n"]) for r in rows][1:] == [("0.5", "", "2"), ("", "", "0")]


def test_without_replicates_the_report_is_the_per_job_table(tmp_path):
    command = ["optimizer.lr=0.1,0.01", "seed=0,1"]
    jobs = {i: {"overrides": [f"optimizer.lr={lr}", f"seed={s}"], "metrics": METRICS}
            for i, (lr, s) in enumerate([("0.1", "0"), ("0.1", "1"), ("0.01", "0"), ("0.01", "1")])}
    path = make_sweep(tmp_path / "s", ["optimizer.lr=0.1,0.01", "seed=0"], {
        0: {"overrides": ["optimizer.lr=0.1", "seed=0"], "metrics": METRICS},
        1: {"overrides": ["optimizer.lr=0.01", "seed=0"], "metrics": METRICS}})
    assert group_table(build_table(load_sweep(path))) is None
    assert main([str(path)]) == 0
    assert (path / "table.md").read_text() == build_table(load_sweep(path)).to_markdown()
    assert not (path / "jobs.md").exists() and not (path / "jobs.csv").exists()
    # an Optuna study that tried the same parameters twice still lists every trial
    study = make_sweep(tmp_path / "study", command, jobs | {1: {"overrides": ["optimizer.lr=0.1", "seed=0"],
                                                                 "metrics": METRICS}},
                       sweeper="hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    sweep = load_sweep(study)
    assert has_replicates(sweep.jobs, sweep.varying) and group_table(build_table(sweep)) is None


def test_plots_draw_means_with_std_error_bars_and_the_runs_as_faint_points(seed_sweep):
    from matplotlib.container import ErrorbarContainer

    table = build_table(load_sweep(seed_sweep))
    fig = figure(table, "val/top1", "optimizer.lr")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    line, _, (segments,) = bars[0].lines
    means = {lr: expected(nums, TOP1) for lr, nums in ((0.1, [0, 1, 2]), (0.01, [3, 4, 5]))}
    assert list(line.get_xdata()) == [0.01, 0.1]  # in x order
    assert list(line.get_ydata()) == pytest.approx([means[0.01][0], means[0.1][0]], rel=1e-12)
    for (x0, low), (_, high) in segments.get_segments():
        mean, std, _ = means[round(x0, 4)]
        assert (low, high) == pytest.approx((mean - std, mean + std), rel=1e-12)
    runs = ax.collections[-1].get_offsets()  # the 5 finished runs, faint, beside their bar
    assert sorted(float(y) for _, y in runs) == pytest.approx(sorted(TOP1.values()))
    assert ax.collections[-1].get_alpha() < 0.5
    assert "mean ± std, 5 of 6 jobs" in ax.get_title()

    against_seed = figure(table, "val/top1", "seed").axes[0]  # every run its own point, one line per lr
    assert not any(isinstance(c, ErrorbarContainer) for c in against_seed.containers)
    assert len(against_seed.get_lines()) == 2

    pngs = plot(table)  # x: optimizer.lr, the first varying parameter that is not the seed
    assert (seed_sweep / "plot_val_top1.png") in pngs
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)


def test_seed_first_on_the_command_line_and_one_line_per_other_parameter(tmp_path):
    from matplotlib.container import ErrorbarContainer

    command = ["seed=0,1", "model.dropout=0.0,0.5", "optimizer.lr=0.1,0.01"]
    jobs, num = {}, 0
    for seed in (0, 1):
        for dropout in ("0.0", "0.5"):
            for lr in ("0.1", "0.01"):
                jobs[num] = {"overrides": [f"seed={seed}", f"model.dropout={dropout}", f"optimizer.lr={lr}"],
                             "metrics": {**METRICS, "test/top1": 0.5 + num / 20}}
                num += 1
    path = make_sweep(tmp_path / "s", command, jobs)
    table = build_table(load_sweep(path), ["test/top1"])
    grouped = group_table(table)
    assert grouped.params == ["model.dropout", "optimizer.lr"] and len(grouped.groups) == 4
    assert [[j.num for j in g.jobs] for g in grouped.groups] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [p.name for p in plot(table)] == ["plot_test_top1.png"]
    ax = figure(table, "test/top1", "model.dropout").axes[0]
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2  # one per learning rate
    assert ax.get_legend().get_title().get_text() == "optimizer.lr"
    assert [g.params for g in group_jobs(table.jobs, table.params)] == [g.params for g in grouped.groups]


# A real sweep: 2 learning rates x 2 seeds, one epoch of 2 batches each.
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1"]


@pytest.mark.slow  # a real run (about 15 s): make test-all; the default tier stays under 5 minutes
def test_a_real_seed_sweep_is_reported_by_configuration_and_tensorboard_keeps_one_row_per_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "sweep"
    result = run_cli(["-m", "optimizer.lr=0.01,0.003", "seed=0,1", *FAST, f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    report = subprocess.run([sys.executable, "-m", "lab.report", str(out), "--plot", "--sort", "val/top1",
                             "--metrics", "val/top1,val/loss"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "2 configurations × 2 runs (seed)" in report.stdout

    scores = {j: json.loads((out / str(j) / "metrics.json").read_text())["val/top1"] for j in range(4)}
    means = {"0.01": statistics.mean([scores[0], scores[1]]), "0.003": statistics.mean([scores[2], scores[3]])}
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.003", "0.01"]
    assert [float(r["val/top1"]) for r in rows] == sorted(means.values(), reverse=True)  # best mean first
    for row in rows:
        assert float(row["val/top1"]) == pytest.approx(means[row["optimizer.lr"]], rel=1e-12)
        assert row["n"] == "2" and row["status"] == "2 ok" and row["seeds"] == "0 1"
    assert len(list(csv.DictReader((out / "jobs.csv").open()))) == 4
    assert (out / "plot_val_top1.png").read_bytes().startswith(b"\x89PNG")

    # HParams: every run logged its own session (its seed, no shared group name): one row per run.
    sessions = []
    for job in range(4):
        events = EventAccumulator(str(out / str(job)), size_guidance={"images": 1})
        events.Reload()
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert start.group_name == ""
        sessions.append((start.hparams["optimizer.lr"].number_value, start.hparams["seed"].number_value))
    assert sorted(sessions) == sorted([(0.01, 0), (0.01, 1), (0.003, 0), (0.003, 1)])
    report_run = EventAccumulator(str(out / "report"))
    report_run.Reload()
    with pytest.raises(KeyError):  # the report's images add no row
        report_run.PluginTagToContent("hparams")
