"""Whole runs in-process: what lands in the run folder and in TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import QUICK, run_in_process

REQUIRED = ["val/loss", "val/top1", "val/top5", "val/top1_best", "test/loss", "test/top1", "test/top5",
            "epochs", "wall_time_s", "seed"]


def event_data(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_fast_dev_run_wires_everything_and_saves_nothing(tmp_path):
    metrics = run_in_process(["debug=fast_dev_run"], tmp_path)
    assert 0.0 <= metrics["test/top1"] <= 1.0
    assert not (tmp_path / "metrics.json").exists()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    metrics = run_in_process([*QUICK, "seed=7", "scheduler=plateau"], run_dir)
    return run_dir, metrics


def test_metrics_json_holds_the_final_metrics(quick_run):
    run_dir, metrics = quick_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in saved, f"metrics.json lacks {key}"
    for key in REQUIRED[:7]:
        assert 0.0 <= saved[key] <= (1.0 if "top" in key else 50.0), (key, saved[key])
    assert saved["seed"] == 7 and saved["epochs"] == 2
    assert saved["val/top1_best"] >= saved["val/top1"] - 1e-9
    assert saved["best_epoch"] in (0, 1)
    assert saved["val/top5"] >= saved["val/top1"]
    assert saved == pytest.approx(metrics)


def test_run_folder_holds_config_and_checkpoints(quick_run):
    run_dir, _ = quick_run
    assert "scheduler" in (run_dir / "config.yaml").read_text()
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in names
    best = [n for n in names if n.startswith("epoch")]
    assert len(best) == 1, names
    assert (run_dir / "confusion_test.png").stat().st_size > 1000
    rows = (run_dir / "confusion_test.csv").read_text().strip().splitlines()
    assert len(rows) == 11  # header + 10 classes


def test_checkpoint_loads_with_weights_only(quick_run):
    import torch

    run_dir, _ = quick_run
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert any(k.startswith("model.") for k in state["state_dict"])


def test_tensorboard_scalars_images_and_hparams(quick_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, metrics = quick_run
    acc = event_data(run_dir)
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/top1", "train/top5", "train/lr", "val/loss", "val/top1", "val/top5",
                "val/top1_best", "test/loss", "test/top1", "test/top5"):
        assert tag in scalars, f"no scalar {tag}; have {sorted(scalars)}"
    assert acc.Scalars("test/top1")[-1].value == pytest.approx(metrics["test/top1"])
    assert len(acc.Scalars("val/top1")) == 2  # one point per epoch
    images = acc.Tags()["images"]
    assert any("confusion" in t and t.startswith("val/") for t in images), images
    assert any("confusion" in t and t.startswith("test/") for t in images), images
    assert len(acc.Images("val/confusion_matrix")) == 2  # every validation epoch
    # The run folder's PNGs are the last pictures logged (the same pixels: both lossless).
    import io

    import numpy as np
    from PIL import Image

    pixels = lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # noqa: E731
    for split in ("val", "test"):
        logged = acc.Images(f"{split}/confusion_matrix")[-1].encoded_image_string
        assert np.array_equal(pixels((run_dir / f"confusion_{split}.png").read_bytes()), pixels(logged))
    # HParams: a session start with the run's parameters, no placeholder hp_metric.
    assert "hp_metric" not in scalars
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    params = start.session_start_info.hparams
    assert params["seed"].number_value == 7
    assert params["optimizer.lr"].number_value == pytest.approx(0.002)
    assert params["scheduler"].string_value == "plateau"


def test_pictures_encode_losslessly_or_to_a_bounded_palette():
    import io

    import numpy as np
    from PIL import Image

    from lab.callbacks.confusion import render_confusion
    from lab.utils.png import encode_png

    image = render_confusion(np.array([[5, 1], [0, 7]]), ["cat", "dog"], "val confusion, epoch 3")
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))).convert("RGB"))
    assert np.array_equal(decoded, image)
    palette = np.asarray(Image.open(io.BytesIO(encode_png(image, colors=8))).convert("RGB"))
    assert palette.shape == image.shape and len(np.unique(palette.reshape(-1, 3), axis=0)) <= 8


def test_val_picture_drawn_at_the_fits_end_names_the_epoch_it_counts(tmp_path):
    """Without a TensorBoard logger the val picture is drawn at the fit's end, when the trainer's
    epoch has moved past the last one validated; its title still names that one."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from lab.callbacks.confusion import ConfusionMatrixLogger, render_confusion
    from lab.utils.png import encode_png

    names = [f"class {i}" for i in range(12)]  # wide enough for the whole title
    callback = ConfusionMatrixLogger()
    trainer = SimpleNamespace(world_size=1, is_global_zero=True, loggers=[], current_epoch=1, sanity_checking=False,
                              default_root_dir=str(tmp_path), fast_dev_run=False,
                              datamodule=SimpleNamespace(class_names=names))
    module = SimpleNamespace(num_classes=12)
    target, preds = torch.arange(12), torch.arange(12).roll(1)
    callback.on_validation_batch_end(trainer, module, {"preds": preds, "target": target}, None, 0)
    callback.on_validation_epoch_end(trainer, module)
    trainer.current_epoch = 2  # the fit has ended
    callback.on_fit_end(trainer, module)
    matrix = np.zeros((12, 12), dtype=int)
    matrix[target.numpy(), preds.numpy()] = 1
    expected = encode_png(render_confusion(matrix, names, "val confusion, epoch 1"))
    assert (tmp_path / "confusion_val.png").read_bytes() == expected
