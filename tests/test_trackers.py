"""MLflow and W&B next to TensorBoard: real runs read back with each tracker's own client.

MLflow through `MlflowClient` on the SQLite store; W&B through its offline run file
(run-<id>.wandb: a LevelDB-style log of `wandb.proto.wandb_internal_pb2.Record` messages,
which wandb 0.31 no longer reads back in Python, so the test reads the log itself); no
network anywhere (W&B offline, MLflow local).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import QUICK, ROOT, compose, run_cli

pytest.importorskip("mlflow")
pytest.importorskip("wandb")

# Trackers off the network whatever the machine's settings say.
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_TRACKING_URI": ""}


def png_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def sweep(tmp_path: Path, logger: str) -> tuple[Path, list[Path]]:
    """`python -m lab.run -m logger=<logger> seed=0,1` on digits, 2 epochs of a few batches, with the
    outputs root (mlflow.db, multiruns/) in tmp_path; the outputs root and the job folders."""
    outputs = tmp_path / "outputs"
    result = run_cli(["-m", f"logger={logger}", "seed=0,1", *QUICK], cwd=tmp_path,
                     env={**OFFLINE, "LAB_OUTPUT_DIR": str(outputs)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = sorted(outputs.glob("multiruns/*/[0-9]"))
    assert [job.name for job in jobs] == ["0", "1"]
    return outputs, jobs


# ------------------------------------------------------------------ MLflow: the acceptance


@pytest.fixture(scope="module")
def mlflow_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    outputs, jobs = sweep(tmp, "[tensorboard,mlflow]")
    return tmp, outputs, jobs


def test_a_two_job_sweep_leaves_two_mlflow_runs_with_metrics_params_and_confusion_images(mlflow_sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    cwd, outputs, jobs = mlflow_sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits_small_cnn")  # the run's `name`
    runs = client.search_runs([experiment.experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    labels = [job.relative_to(outputs).as_posix() for job in jobs]  # multiruns/<time>_digits_small_cnn/<job>
    assert sorted(by_name) == labels
    for seed, (job, label) in enumerate(zip(jobs, labels)):
        run, saved = by_name[label], json.loads((job / "metrics.json").read_text())
        assert run.info.status == "FINISHED"
        # Metrics: every epoch's val/top1, and the final values equal metrics.json's.
        history = client.get_metric_history(run.info.run_id, "val/top1")
        assert len(history) == 2 and history[-1].value == pytest.approx(saved["val/top1"])
        for key in ("test/top1", "test/loss", "val/top1_best"):
            assert run.data.metrics[key] == pytest.approx(saved[key]), key
        # Params: the HParams entry's, the overrides included (a list of loggers as typed).
        params = run.data.params
        assert params["seed"] == str(seed) and params["optimizer.lr"] == "0.002"
        assert params["data"] == "digits" and params["model"] == "small_cnn"
        assert params["logger"] == "[tensorboard,mlflow]" and params["trainer.limit_train_batches"] == "4"
        # Pictures: one val matrix per validation epoch and the test matrix, the very PNG saved in the run folder.
        images = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
        assert len([p for p in images if "/val~confusion_matrix+step+" in p]) == 2, images
        test_png = [p for p in images if "/test~confusion_matrix+step+" in p]
        assert len(test_png) == 1, images
        local = client.download_artifacts(run.info.run_id, test_png[0], str(tmp_path / job.name))
        assert np.array_equal(png_pixels(Path(local)), png_pixels(job / "confusion_test.png"))
    # Artifacts sit next to the database, not in a ./mlruns of the folder the sweep ran from.
    assert experiment.artifact_location.removeprefix("file://") == str(outputs / "mlartifacts" / "digits_small_cnn")
    assert not (cwd / "mlruns").exists()


def test_tensorboard_next_to_mlflow_still_gets_the_same_pictures(mlflow_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, jobs = mlflow_sweep
    for job in jobs:
        events = EventAccumulator(str(job), size_guidance={"images": 0})
        events.Reload()
        assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(events.Tags()["images"])
        assert len(events.Images("val/confusion_matrix")) == 2


@pytest.mark.slow
def test_parallel_jobs_share_a_new_mlflow_database(tmp_path):
    """hydra/launcher=joblib: two jobs start together on a database that does not exist yet (MLflow
    creates its tables and the experiment on first sight: without lab's lock, `table ... already exists`)."""
    from mlflow.tracking import MlflowClient

    outputs = tmp_path / "outputs"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=mlflow", "seed=0,1", *QUICK]
    result = run_cli(args, cwd=tmp_path, env={**OFFLINE, "LAB_OUTPUT_DIR": str(outputs)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits_small_cnn").experiment_id])
    assert sorted(run.data.params["seed"] for run in runs) == ["0", "1"]
    assert all(run.info.status == "FINISHED" and "test/top1" in run.data.metrics for run in runs)


# ------------------------------------------------------------------ W&B offline


def wandb_records(path: Path):
    """The Record messages of an offline run file: a 7-byte header (':W&B', 0xBEE1, version), then
    32 KiB blocks of chunks, each with a CRC-32 (of its type byte, then its data), a length and a
    type (1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad chunk at byte {pos} of {path}"
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_wandb_run(run_file: Path) -> dict:
    """The run record, the config, the final summary and the history rows of an offline run."""
    out = {"config": {}, "summary": {}, "history": [], "run": None, "exit": None}

    def key(item) -> str:
        return "/".join(item.nested_key) if item.nested_key else item.key

    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "config":
            out["config"].update({key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "summary":
            for u in record.summary.update:  # nested updates name one field of a value (an image's filenames)
                if u.nested_key[1:]:
                    out["summary"].setdefault(u.nested_key[0], {})[u.nested_key[-1]] = json.loads(u.value_json)
                else:
                    out["summary"][key(u)] = json.loads(u.value_json)
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                if item.nested_key[1:]:
                    row.setdefault(item.nested_key[0], {})[item.nested_key[-1]] = json.loads(item.value_json)
                else:
                    row[key(item)] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "exit":
            out["exit"] = record.exit
    return out


@pytest.mark.slow  # the default tier is at its 5-minute budget (make test-all runs it)
def test_wandb_runs_offline_one_run_per_sweep_job_in_its_folder(tmp_path):
    outputs, jobs = sweep(tmp_path, "wandb")
    for seed, job in enumerate(jobs):
        files = list(job.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) == 1, files  # its own run: the first job's was finished, not reused
        run, saved = read_wandb_run(files[0]), json.loads((job / "metrics.json").read_text())
        assert run["run"].project == "digits_small_cnn" and run["run"].display_name == job.relative_to(
            outputs).as_posix()
        assert run["exit"] is not None and run["exit"].exit_code == 0
        assert run["config"]["seed"] == seed and run["config"]["optimizer.lr"] == 0.002
        assert run["config"]["data"] == "digits" and run["config"]["logger"] == "wandb"
        for k in ("test/top1", "val/top1", "val/top1_best"):
            assert run["summary"][k] == pytest.approx(saved[k]), k
        assert len([row for row in run["history"] if "val/top1" in row]) == 2
        pictures = {k: row[k]["filenames"] for row in run["history"] for k in row if k.endswith("confusion_matrix")
                    if isinstance(row[k], dict) and "filenames" in row[k]}
        assert set(pictures) == {"val/confusion_matrix", "test/confusion_matrix"}
        media = files[0].parent / "files" / pictures["test/confusion_matrix"][0]
        assert np.array_equal(png_pixels(media), png_pixels(job / "confusion_test.png"))


def test_a_wandb_run_left_open_by_a_failed_job_is_closed_before_the_next_job(tmp_path, monkeypatch):
    """Lightning never finishes a W&B run; lab does at the end of a job, and a job that failed before
    that leaves it open in the multirun's process: the next job closes it as failed (exit code 1)."""
    import types

    from lab.runs.loggers import build_loggers

    finished = []
    leftover = types.SimpleNamespace(finish=lambda exit_code=0: finished.append(exit_code))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(run=leftover))
    assert build_loggers(compose(["logger=none"], tmp_path / "run")) == []
    assert finished == [1]


# ------------------------------------------------------------------ a tracker that is not installed


@pytest.mark.slow
def test_a_missing_tracker_is_one_line_with_the_install_command(tmp_path):
    """`python -m lab.run logger=[tensorboard,mlflow]` without mlflow: exit 2, one line, no traceback
    (slow: a process of its own; the default tier checks the same message in-process, below)."""
    script = ("import runpy, sys; sys.modules['mlflow'] = None; "
              "sys.argv = ['lab.run', *sys.argv[1:]]; runpy.run_module('lab.run', run_name='__main__')")
    result = subprocess.run(
        [sys.executable, "-c", script, "logger=[tensorboard,mlflow]", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT), "LAB_OUTPUT_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line.lower()]
    assert errors == ["error: logger=mlflow needs mlflow, which is not installed: pip install -e '.[mlflow]' in "
                      f"lab's folder (or {python} -m pip install mlflow-skinny sqlalchemy alembic)"], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("logger, blocked, needs", [
    ("[tensorboard,mlflow]", "mlflow", "logger=mlflow needs mlflow,"),
    ("wandb", "wandb", "logger=wandb needs wandb,"),
    ("[tensorboard,mlflow]", "sqlalchemy", "logger=mlflow needs sqlalchemy,"),
    ("[csv,mlflow]", "alembic", "logger=mlflow needs alembic,"),
])
def test_each_tracker_names_what_it_misses(tmp_path, monkeypatch, logger, blocked, needs):
    from lab.errors import ConfigError
    from lab.runs.loggers import build_loggers

    monkeypatch.setitem(sys.modules, blocked, None)  # as if not installed: find_spec and import both fail
    with pytest.raises(ConfigError) as err:
        build_loggers(compose([f"logger={logger}"], tmp_path / "run"))
    message = str(err.value)
    assert message.startswith(needs) and "\n" not in message
    extra = "wandb" if logger == "wandb" else "mlflow"
    assert f"pip install -e '.[{extra}]'" in message and "-m pip install " in message


def test_the_install_command_names_pyprojects_extras():
    """The one-line error's packages are the ones `pip install -e '.[mlflow]'` / '.[wandb]' installs."""
    import tomllib
    from packaging.requirements import Requirement

    from lab.runs.loggers import TRACKERS

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    for tracker in TRACKERS.values():
        assert tracker.extra in extras, f"pyproject.toml has no [{tracker.extra}] extra"
        declared = sorted(Requirement(r).name.lower() for r in extras[tracker.extra])
        assert declared == sorted(tracker.packages.split()), tracker.extra


# ------------------------------------------------------------------ configs


def test_logger_groups_merge_and_none_still_means_none(tmp_path):
    from lab.runs.loggers import build_loggers

    cfg = compose(["logger=[tensorboard,csv,mlflow,wandb]"], tmp_path / "run")
    assert list(cfg.logger) == ["tensorboard", "csv", "mlflow", "wandb"]
    assert cfg.logger.mlflow.tracking_uri.startswith("sqlite:///") and cfg.logger.mlflow.tracking_uri.endswith(
        "/mlflow.db")
    assert cfg.logger.wandb.offline is True and cfg.logger.wandb.save_dir == str(tmp_path / "run")
    assert cfg.logger.mlflow.experiment_name == cfg.logger.wandb.project == cfg.name
    assert compose(["logger=none"]).logger is None
    assert build_loggers(compose(["logger=none"], tmp_path / "none")) == []


def test_default_tracking_uri_is_outputs_mlflow_db(monkeypatch):
    monkeypatch.delenv("LAB_OUTPUT_DIR", raising=False)
    cfg = compose(["logger=mlflow"])
    assert cfg.logger.mlflow.tracking_uri == "sqlite:///outputs/mlflow.db"  # the README's `mlflow ui` command
    assert cfg.logger.mlflow.artifact_location == f"outputs/mlartifacts/{cfg.name}"


def test_run_label_is_the_folder_under_the_outputs_root(tmp_path, monkeypatch):
    from lab.runs.loggers import run_label

    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    assert run_label(compose([], tmp_path / "multiruns" / "2026_x" / "3")) == "multiruns/2026_x/3"
    assert run_label(compose([], tmp_path.parent / "elsewhere")) == "elsewhere"


# ------------------------------------------------------------------ pictures reach every logger


class RecordedConfig(dict):
    def update(self, values: dict, allow_val_change: bool = False) -> None:
        super().update(values)


class RecordingWandbRun:
    """Stands in for a wandb Run under a real WandbLogger: records what the logger hands it."""

    def __init__(self) -> None:
        self.logged: list[dict] = []
        self.config = RecordedConfig()
        self.finished = False

    def log(self, row: dict) -> None:
        self.logged.append(row)

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def every_logger(tmp_path):
    """Real TensorBoard, CSV and MLflow (SQLite) loggers, and a real WandbLogger around a recording run."""
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    run = RecordingWandbRun()
    loggers = [
        TensorBoardLogger(str(tmp_path / "tb"), name="", version=""),
        CSVLogger(str(tmp_path / "csv"), name="", version=""),
        MLFlowLogger(experiment_name="unit", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                     artifact_location=str(tmp_path / "artifacts"), run_name="unit-run"),
        WandbLogger(experiment=run, offline=True, save_dir=str(tmp_path)),
    ]
    return loggers, run


def test_a_picture_reaches_every_logger_that_holds_pictures(every_logger, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lab.runs.loggers import image_loggers, log_image

    loggers, wandb_run = every_logger
    assert [type(lg).__name__ for lg in image_loggers(loggers)] == ["TensorBoardLogger", "MLFlowLogger",
                                                                    "WandbLogger"]
    image = np.zeros((12, 20, 3), dtype=np.uint8)
    image[:, :10, 0] = 255
    for step in (3, 7):
        log_image(loggers, "features/pca_train", image, step)
    loggers[0].experiment.flush()

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert [(e.step, e.width, e.height) for e in events.Images("features/pca_train")] == [(3, 20, 12), (7, 20, 12)]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    pngs = sorted(a.path for a in client.list_artifacts(loggers[2].run_id, "images") if a.path.endswith(".png"))
    assert [p.split("+step+")[1].split("+")[0] for p in pngs] == ["3", "7"] and all(
        p.startswith("images/features~pca_train+step+") for p in pngs)
    local = client.download_artifacts(loggers[2].run_id, pngs[0], str(tmp_path / "down"))
    assert np.array_equal(png_pixels(Path(local)), image)

    rows = [row for row in wandb_run.logged if "features/pca_train" in row]
    assert [row["trainer/global_step"] for row in rows] == [3, 7]
    picture = rows[0]["features/pca_train"][0]
    assert type(picture).__name__ == "Image" and picture.image.size == (20, 12)
    assert not list((tmp_path / "csv").rglob("*.png"))  # CSV holds no pictures, and nothing broke


def test_the_run_summary_reaches_every_logger(every_logger, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lab.runs.hparams import write_hparams

    loggers, wandb_run = every_logger
    params = {"optimizer.lr": 0.01, "data": "digits", "seed": 3, "odd key@v1": "x"}
    loggers[2].log_metrics({"test/top1": 0.75}, step=5)
    write_hparams(loggers, params, ["test/top1"])

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(loggers[2].run_id)
    assert run.data.params == {"optimizer.lr": "0.01", "data": "digits", "seed": "3", "odd key_v1": "x"}
    assert run.data.metrics == {"test/top1": 0.75}
    assert wandb_run.config == params and wandb_run.finished


# ------------------------------------------------------------------ pictures of the other callbacks


@pytest.mark.slow
def test_feature_and_function_pictures_reach_mlflow(tmp_path, monkeypatch):
    """viz.* pictures (PCA, the train confusion) and the function-fit plot, in MLflow as in TensorBoard."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import run_in_process

    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    run_in_process([*QUICK, "logger=[tensorboard,mlflow]", "viz.classes=[0,1,2]", "viz.methods=[pca]",
                    "viz.projector=false", "viz.confusion_train=true", "viz.splits=[test]"], tmp_path / "digits")
    run_in_process(["experiment=mlp_function", "trainer.max_epochs=200", "task.chunk=100", "logger=mlflow",
                    "trainer.enable_model_summary=false"], tmp_path / "function")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tags = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            pngs = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
            names = [path.split("/", 1)[1].split("+step+")[0] for path in pngs]
            tags[run.info.run_name] = sorted(set(names))
    assert tags["digits"] == ["features~pca_test", "test~confusion_matrix", "train~confusion_matrix",
                              "val~confusion_matrix"]
    assert tags["function"] == ["function_fit"]
