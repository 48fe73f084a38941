"""Studies (conf/study/): each composes into its experiment and sweep with seeds, its findings are
checked by the rules lab.results.study states, and its report is written into the sweep folder.

The finding checks run on sweep folders in the real on-disk layout (tests.test_report.make_sweep)
with metric values chosen so that each rule's answer is known: a clear effect (t well above 2),
an effect inside the seeds' noise (t below 2), the wrong direction, too few runs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lab.config.paths import config_dir
from lab.results.study import Study, write_report
from lab.results.sweep import ReportError, load_sweep
from tests.conftest import ROOT
from tests.test_report import make_sweep

STUDIES = sorted(p.stem for p in (Path(config_dir()) / "study").glob("*.yaml"))


def study_sweep(path: Path, x: str, values: dict[str, list[float]], spec: dict, metric: str = "test/top1") -> Path:
    """A finished study sweep: x takes each value of `values`, once per seed, with the given metric."""
    jobs, num = {}, 0
    for value, runs in values.items():
        for seed, result in enumerate(runs):
            jobs[num] = {"overrides": [f"{x}={value}", f"seed={seed}"], "metrics": {metric: result, "wall_time_s": 1.0}}
            num += 1
    seeds = ",".join(str(s) for s in range(max(len(r) for r in values.values())))
    # a sweep whose every value ran the same number of seeds; ragged ones list jobs from their folders
    return make_sweep(path, ["study=test"], jobs, params={x: ",".join(values), "seed": seeds},
                      config={"study": {"x": x, "metric": metric, "mode": "max", **spec}})


def verdict(tmp_path, values, finding, x="data.noise_ratio", **spec):
    path = study_sweep(tmp_path / "sweep", x, values, {"findings": [finding], **spec})
    study = Study(load_sweep(path))
    (result,) = study.verdicts
    return result


NOISY = [0.85, 0.86, 0.87]  # std 0.01


def test_decreasing_is_reproduced_only_when_every_step_falls_and_the_ends_differ(tmp_path):
    falling = {"0.0": NOISY, "0.1": [0.80, 0.81, 0.82], "0.3": [0.70, 0.71, 0.72]}
    good = verdict(tmp_path / "a", falling, {"kind": "decreasing", "text": "falls"})
    assert good.reproduced and "first - last t = 18.4" in good.statistic, good.line
    bumpy = {"0.0": NOISY, "0.1": [0.88, 0.89, 0.90], "0.3": [0.70, 0.71, 0.72]}
    assert not verdict(tmp_path / "b", bumpy, {"kind": "decreasing"}).reproduced
    flat = {"0.0": NOISY, "0.1": [0.85, 0.855, 0.86], "0.3": [0.84, 0.85, 0.86]}
    result = verdict(tmp_path / "c", flat, {"kind": "decreasing"})
    assert not result.reproduced and "t = 1.2" in result.statistic, result.line


def test_better_needs_t_of_two(tmp_path):
    clear = {"0.0": [0.50, 0.51, 0.52], "0.9": [0.60, 0.61, 0.62]}
    result = verdict(tmp_path / "a", clear, {"kind": "better", "a": "0.9", "b": "0.0"}, x="optimizer.momentum")
    a, b = clear["0.9"], clear["0.0"]
    t = (statistics.fmean(a) - statistics.fmean(b)) / ((statistics.variance(a) / 3 + statistics.variance(b) / 3) ** 0.5)
    assert result.reproduced and f"t = {t:.1f}" in result.statistic, result.line
    close = {"0.0": [0.50, 0.52, 0.54], "0.9": [0.51, 0.53, 0.55]}
    result = verdict(tmp_path / "b", close, {"kind": "better", "a": "0.9", "b": "0.0"}, x="optimizer.momentum")
    assert not result.reproduced and "within the seeds' noise" in result.line, result.line
    one_seed = {"0.0": [0.5], "0.9": [0.6]}
    result = verdict(tmp_path / "c", one_seed, {"kind": "better", "a": "0.9", "b": "0.0"}, x="optimizer.momentum")
    assert not result.reproduced and "needs 2+ runs" in result.statistic


def test_best_is_best_interior_and_worst_is(tmp_path):
    values = {"0.001": [0.40, 0.41, 0.42], "0.01": [0.60, 0.61, 0.62], "0.1": [0.50, 0.51, 0.52], "1": [0.1, 0.1, 0.11]}
    assert verdict(tmp_path / "a", values, {"kind": "best_is", "value": "0.01"}, x="optimizer.lr").reproduced
    wrong = verdict(tmp_path / "b", values, {"kind": "best_is", "value": "0.1"}, x="optimizer.lr")
    assert not wrong.reproduced and wrong.statistic.startswith("best: optimizer.lr=0.01"), wrong.line
    assert verdict(tmp_path / "c", values, {"kind": "best_interior"}, x="optimizer.lr").reproduced
    assert verdict(tmp_path / "d", values, {"kind": "worst_is", "value": 1}, x="optimizer.lr").reproduced
    same = {"0.1": NOISY, "0.5": NOISY}
    result = verdict(tmp_path / "f", same, {"kind": "best_is", "value": "0.1"}, x="scheduler.factor")
    assert not result.reproduced and "scheduler.factor changed nothing" in result.statistic
    at_end = {"0.001": [0.70, 0.71, 0.72], "0.01": [0.60, 0.61, 0.62], "0.1": [0.50, 0.51, 0.52]}
    result = verdict(tmp_path / "e", at_end, {"kind": "best_interior"}, x="optimizer.lr")
    assert not result.reproduced and "the best is at an end" in result.statistic


def test_not_better_and_at_chance(tmp_path):
    depth = {"8": [0.80, 0.81, 0.82], "10": [0.80, 0.81, 0.83], "12": [0.79, 0.80, 0.82]}
    assert verdict(tmp_path / "a", depth, {"kind": "not_better", "a": "last", "b": "first"}, x="model.depth").reproduced
    deeper = {"8": [0.70, 0.71, 0.72], "12": [0.80, 0.81, 0.82]}
    assert not verdict(tmp_path / "b", deeper, {"kind": "not_better", "a": "last", "b": "first"},
                       x="model.depth").reproduced
    norm = {"batch": [0.8, 0.81, 0.82], "none": [0.1, 0.1, 0.1]}
    assert verdict(tmp_path / "c", norm, {"kind": "at_chance", "value": "none", "chance": 0.1, "margin": 0.05},
                   x="model.norm").reproduced
    assert not verdict(tmp_path / "d", norm, {"kind": "at_chance", "value": "batch", "chance": 0.1, "margin": 0.05},
                       x="model.norm").reproduced


def test_a_finding_naming_a_value_the_sweep_did_not_run_says_so(tmp_path):
    with pytest.raises(ReportError, match=r"names optimizer.lr=0.5, which this sweep did not run \(it ran 0.01, 0.1\)"):
        verdict(tmp_path, {"0.01": NOISY, "0.1": NOISY}, {"kind": "best_is", "value": "0.5"}, x="optimizer.lr")


def test_the_report_is_written_into_the_sweep_and_lab_report_regenerates_it(tmp_path):
    values = {"0.0": NOISY, "0.5": [0.50, 0.51, 0.52]}
    spec = {"title": "Noise", "reference": "0.1: 46.79%", "findings": [{"kind": "decreasing", "text": "falls"}]}
    path = study_sweep(tmp_path / "sweep", "data.noise_ratio", values, spec)
    _, written = write_report(load_sweep(path))
    text = (path / "study.md").read_text()
    assert "| data.noise_ratio | test/top1 | wall_time_s | n |" in text
    assert f"| 0.0 | {statistics.fmean(NOISY):.4f} ± {statistics.stdev(NOISY):.4f} |" in text
    assert "Reference (STUDIES.md): 0.1: 46.79%" in text and "- reproduced: falls (" in text
    summary = json.loads((path / "study.json").read_text())
    assert summary["findings"][0]["reproduced"] is True and summary["settings"][0]["n"] == 3
    assert (path / "plot_test_top1.png").read_bytes().startswith(b"\x89PNG")
    (path / "study.md").unlink()
    result = subprocess.run([sys.executable, "-m", "lab.report", str(path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (path / "study.md").is_file() and "reproduced: falls" in result.stdout


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_composes_into_its_experiment_with_seeds_and_checkable_findings(name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"study={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert str(params.seed).split(",") == ["0", "1", "2"]
    study = cfg.study
    assert study.title and study.reference and study.findings and study.mode in ("max", "min")
    assert study.x in params or study.x in ("dropout", "metric_loss"), (study.x, dict(params))
    for finding in study.findings:
        assert finding.kind in ("better", "not_better", "best_is", "worst_is", "best_interior", "decreasing",
                                "at_chance")


def test_a_study_sweep_is_checked_before_its_first_job(tmp_path):
    """The study picks its sweep itself: the pre-flight check builds its jobs too."""
    from lab.config.sweep_checks import check_sweep
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^sweep job optimizer.lr=0.001 seed=0 cannot run: model.activation must be"):
        check_sweep(["-m", "study=function_lr", "model.activation=nope"], config_dir())


@pytest.mark.slow
def test_a_small_study_runs_end_to_end_and_writes_its_report(tmp_path):
    """study=function_lr at 200 epochs: 4 learning rates x 3 seeds, the report at the sweep's end."""
    from tests.conftest import run_cli

    sweep = tmp_path / "study"
    result = run_cli(["-m", "study=function_lr", "trainer.max_epochs=200", "task.chunk=100",
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert len([p for p in sweep.iterdir() if p.name.isdigit()]) == 12
    text = (sweep / "study.md").read_text()
    assert "| optimizer.lr | val/mse |" in text and " ± " in text and "| 3 |" in text
    assert "Reference (STUDIES.md): Learning rates 0.001" in text
    lines = [line for line in out.splitlines() if line.startswith(("reproduced: ", "not reproduced: "))]
    assert len(lines) == 2 and "lr 0.01 gives the best fit" in lines[0], out[-3000:]
    summary = json.loads((sweep / "study.json").read_text())
    assert [s["n"] for s in summary["settings"]] == [3, 3, 3, 3]
