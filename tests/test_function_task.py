"""task=regression end to end: study epochs vs Lightning epochs, metrics, R^2, plots, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.errors import ConfigError
from lab.utils.seeds import stream_seed
from tests.conftest import compose, run_cli, run_in_process

# 250 study epochs in chunks of 100: Lightning runs 3 epochs of 100, 100 and 50 steps.
SHORT = ["experiment=mlp_function", "trainer.max_epochs=250", "task.chunk=100", "trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the nets are tiny, and on 2 busy cores two OpenMP threads wait on each other
    (a 1-second run can take 30)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def event_data(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def plain_loop(overrides: list[str], steps: int) -> float:
    """The same training as a plain PyTorch loop: final full-batch training MSE."""
    from hydra.utils import instantiate

    cfg = compose(overrides)
    data = instantiate(cfg.data, seed=cfg.seed)
    data.setup("fit")
    x, y = data.splits["train"]
    torch.manual_seed(stream_seed(cfg.seed, "weights", bits=32))  # lab's initial-weights stream
    model = instantiate(cfg.model, **data.model_inputs())
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fit")
    return run_dir, run_in_process(SHORT, run_dir)


def test_metrics_json_counts_study_epochs(short_run):
    run_dir, metrics = short_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train/mse", "train/lr", "val/mse", "val/r2", "val/mse_best", "test/mse", "test/r2"):
        assert key in saved, f"metrics.json lacks {key}"
    assert saved["epochs"] == 250
    assert saved["val/mse_best"] <= saved["val/mse"] + 1e-9
    assert 0.9 < saved["val/r2"] <= 1.0 and 0.9 < saved["test/r2"] <= 1.0
    assert saved == pytest.approx(metrics)


def test_a_study_epoch_is_one_full_batch_step(short_run):
    """The chunked loop does exactly the steps of a plain loop: same final loss from the same seed."""
    _, metrics = short_run
    assert metrics["train/mse"] == pytest.approx(plain_loop(SHORT, 250), rel=1e-5)


def test_logged_r2_and_mse_match_numpy_on_the_val_split(short_run):
    from hydra.utils import instantiate

    run_dir, metrics = short_run
    cfg = compose(SHORT)
    data = instantiate(cfg.data, seed=cfg.seed)
    data.setup("fit")
    model = instantiate(cfg.model, **data.model_inputs())
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    x, y = data.splits["val"]
    with torch.no_grad():
        pred = model(x).double().numpy().ravel()
    target = y.double().numpy().ravel()
    mse = np.mean((pred - target) ** 2)
    r2 = 1 - np.sum((pred - target) ** 2) / np.sum((target - target.mean()) ** 2)
    assert metrics["val/mse"] == pytest.approx(mse, rel=1e-4)
    assert metrics["val/r2"] == pytest.approx(r2, abs=1e-5)


def test_tensorboard_x_axis_is_the_study_epoch(short_run):
    run_dir, metrics = short_run
    acc = event_data(run_dir)
    for tag in ("train/mse", "val/mse", "val/r2", "val/mse_best"):
        assert [e.step for e in acc.Scalars(tag)] == [100, 200, 250], tag
    assert acc.Scalars("val/r2")[-1].value == pytest.approx(metrics["val/r2"])
    assert [e.step for e in acc.Scalars("test/r2")] == [250]
    assert [e.step for e in acc.Images("function_fit")] == [100, 200, 250]  # every 100 epochs, and the last


def test_run_folder_holds_plot_curve_and_checkpoints(short_run):
    from PIL import Image

    run_dir, _ = short_run
    with Image.open(run_dir / "function_fit.png") as png:
        assert png.size == (720, 440)
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 150) & (pixels[:, 1] < 90) & (pixels[:, 2] < 90)  # the net's curve
    black = pixels.max(axis=1) < 60  # the true curve and the text
    assert red.sum() > 500 and black.sum() > 500
    table = np.loadtxt(run_dir / "function_fit.csv", delimiter=",", skiprows=1)
    assert table.shape == (400, 3)
    x = table[:, 0]
    np.testing.assert_allclose(table[:, 1], x**2 + 2 * np.cos(x) + 2 * np.exp(-x), rtol=1e-4)
    residual, spread = table[:, 2] - table[:, 1], table[:, 1] - table[:, 1].mean()
    assert 0.9 < 1 - np.sum(residual**2) / np.sum(spread**2) < 1.0  # the net's column: the fitted curve
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in names and any(n.startswith("epoch00") and "mse" in n for n in names), names
    assert not (run_dir / "confusion_test.png").exists()


def test_schedules_step_once_per_study_epoch(tmp_path):
    metrics = run_in_process([*SHORT, "trainer.max_epochs=150", "scheduler=exponential", "scheduler.gamma=0.99",
                              "callbacks.function_plot.save_png=false"], tmp_path)
    assert metrics["train/lr"] == pytest.approx(0.01 * 0.99**150, rel=1e-4)


def test_plateau_schedule_steps_after_each_validation(tmp_path):
    # threshold 1e9 (abs): every validation after the first counts as no improvement.
    metrics = run_in_process([*SHORT, "trainer.max_epochs=300", "scheduler=plateau", "scheduler.mode=min",
                              "scheduler.patience=0", "scheduler.factor=0.5", "+scheduler.threshold=1e9",
                              "+scheduler.threshold_mode=abs"], tmp_path)
    assert metrics["train/lr"] == pytest.approx(0.005)  # halved after the 200-epoch validation


def test_fast_dev_run_takes_one_step_and_saves_nothing(tmp_path):
    metrics = run_in_process(["experiment=mlp_function", "debug=fast_dev_run"], tmp_path)
    assert metrics["epochs"] == 1
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "function_fit.png").exists()


def test_bad_chunk_is_refused():
    from lab.tasks.regression import RegressionTask

    with pytest.raises(ConfigError, match="task.chunk must be a positive"):
        RegressionTask(model=torch.nn.Linear(1, 1), optimizer=torch.optim.Adam, chunk=0)


def test_experiment_mlp_function_reaches_r2_099(tmp_path):
    """The acceptance run, as a user types it (~9 s): R^2 >= 0.99 on f2 over [-3, 3], and a PNG of the fit."""
    result = run_cli(["experiment=mlp_function", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, timeout=600,
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["epochs"] == 1000
    assert saved["val/r2"] >= 0.99 and saved["test/r2"] >= 0.99, saved
    from PIL import Image

    with Image.open(tmp_path / "run" / "function_fit.png") as png:
        assert png.size == (720, 440)
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3).astype(int)
    assert ((pixels[:, 0] > 150) & (pixels[:, 1] < 90) & (pixels[:, 2] < 90)).sum() > 500  # the net's curve
