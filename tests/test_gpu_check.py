"""bench/gpu_check.py and bench/gpu_throughput.py on a CPU machine: the one skip line, defaults
that can run, the checks' own logic, and (slow) the CPU dry run and smoke runs of both scripts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.conftest import FASHION_DIR, ROOT, compose

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: gpu-check runs there")


def bench_module(name: str):
    """A bench/ script as a module (bench/ is not a package; its scripts import each other by name)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[key]


def run_script(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- gpu_check: fast


@NO_GPU
def test_gpu_check_without_a_gpu_prints_one_line_and_exits_0(tmp_path):
    gpu_check = bench_module("gpu_check")
    result = run_script([str(ROOT / "bench" / "gpu_check.py")], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == gpu_check.SKIP_LINE + "\n"
    assert not (tmp_path / "outputs").exists()


def test_synthetic_data_loads_through_labs_datamodules(tmp_path):
    """The IDX, CIFAR pickle and Tiny ImageNet writers give what lab's readers expect."""
    from hydra.utils import instantiate

    gpu_check = bench_module("gpu_check")
    data = gpu_check.make_data(tmp_path, gpu_check.CPU)
    overrides = gpu_check.data_overrides(data, gpu_check.CPU)
    expected = {"fashion": ("fashion_mnist", 10, (1, 28, 28)), "cifar": ("cifar10", 10, (3, 32, 32)),
                "tiny": ("tinyimagenet", 200, (3, 64, 64))}
    for key, (name, classes, shape) in expected.items():
        cfg = compose([f"data={name}", *overrides[key]])
        dm = instantiate(cfg.data, seed=0, _convert_="all")
        dm.setup("fit")
        images, labels = dm.splits["train"]
        assert dm.num_classes == classes and tuple(images.shape[1:]) == shape, key
        assert images.dtype == torch.uint8 and len(labels) > 0 and dm.split_sizes()["test"] > 0


def test_sync_check_reports_the_lab_line_that_synced(tmp_path, monkeypatch):
    """No CUDA here, so a host sync is emulated: inside the guard, Tensor.float raises torch's
    sync-debug error. The stage that hits it fails with the lab line, and the later stages still run."""
    fashion = bench_module("gpu_check_data").make_fashion_mnist(tmp_path / "fashion", 600, 100)
    guarded = {"on": False}
    real_float = torch.Tensor.float

    def float_that_syncs(self, *args, **kwargs):
        if guarded["on"]:
            raise RuntimeError("called a synchronizing CUDA operation")
        return real_float(self, *args, **kwargs)

    @contextmanager
    def fake_guard(device):
        guarded["on"] = True
        try:
            yield
        finally:
            guarded["on"] = False

    monkeypatch.setattr(torch.Tensor, "float", float_that_syncs)
    workers = bench_module("gpu_check_workers")
    monkeypatch.setattr(workers, "no_host_sync", fake_guard)
    overrides = ["experiment=cnn_fashionmnist", f"data.root={fashion}", "data.download=false", "data.val_size=100",
                 "data.eval_batch_size=32", "trainer.accelerator=cpu"]
    stages = workers.check_data_path(overrides, torch.device("cpu"), tmp_path / "run")
    assert len(stages) == 4, stages
    first = stages[0]
    assert first["stage"].startswith("train batch") and not first["ok"], stages
    assert first["where"].startswith("lab/data/") and "synchronizing" in first["error"], first
    assert all("where" in s for s in stages if not s["ok"])


def test_sync_check_passes_a_clean_path_on_the_cpu(tmp_path):
    fashion = bench_module("gpu_check_data").make_fashion_mnist(tmp_path / "fashion", 600, 100)
    overrides = ["experiment=triplet_fashionmnist", f"data.root={fashion}", "data.download=false",
                 "data.val_size=100", "data.eval_batch_size=32", "trainer.accelerator=cpu"]
    stages = bench_module("gpu_check_workers").check_data_path(overrides, torch.device("cpu"), tmp_path / "run")
    assert [s["ok"] for s in stages] == [True] * 4, stages


def test_precision_is_read_from_lightnings_own_announcement(caplog):
    """The function path's fp32 check reads what Lightning prints; this is that print, not a copy."""
    import lightning as L

    gpu_check = bench_module("gpu_check")
    with caplog.at_level("INFO"):
        L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False)
    assert gpu_check.Check.precision(caplog.text) == "bf16-mixed"
    assert gpu_check.Check.precision("GPU available: True (cuda), used: True") == "32-true"


def test_eval_and_function_tolerances():
    gpu_check = bench_module("gpu_check")
    run = {"test/top1": 0.9100, "test/loss": 0.3000}
    assert gpu_check.compare_eval(run, {"test/top1": 0.9115, "test/loss": 0.30025}).status == "PASS"
    failed = gpu_check.compare_eval(run, {"test/top1": 0.9070, "test/loss": 0.3000})
    assert failed.status == "FAIL" and "test/top1" in failed.detail
    assert gpu_check.compare_eval(run, {"test/top1": 0.91, "test/loss": 0.3005}).status == "FAIL"
    assert gpu_check.compare_eval(run, {"test/top1": 0.91}).status == "FAIL"
    cpu = {"val/mse": 0.0500}
    assert gpu_check.compare_function({"val/mse": 0.0502}, cpu, "32-true", cuda=True).status == "PASS"
    # bf16 function fitting, the drift issue 21 fixes: 3x the fp32 val/mse, and the wrong precision
    bf16 = gpu_check.compare_function({"val/mse": 0.145}, cpu, "bf16-mixed", cuda=True)
    assert bf16.status == "FAIL" and "bf16" in bf16.detail and "relative" in bf16.detail


def test_doc_section_survives_a_run_all_rewrite(tmp_path, monkeypatch):
    gpu_check, run_all = bench_module("gpu_check"), bench_module("run_all")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Start-up: --help\n\n`bench/startup.py` — target: x\n\n"
                   f"{gpu_check.DOC_MARKER}\n\n## Notes\nhand-written\n")
    result = gpu_check.Result("lab_eval", "PASS", "", {"d_top1": 0.0})
    record = {"date": "2026-12-03T10:00:00", "cuda": True, "args": "", "total_s": 321.0, "passed": 1, "failed": 0,
              "skipped": 0, "results": [result.__dict__],
              "device": {"name": "NVIDIA H200", "count": 1, "capability": "9.0", "memory_gb": 139.8, "torch": "2.14.1",
                         "cuda": "13.0"}}
    gpu_check.write_doc_section(gpu_check.doc_section(record), doc)
    gpu_check.write_doc_section(gpu_check.doc_section(record), doc)  # replaced, not added twice
    assert doc.read_text().count(gpu_check.DOC_HEADING) == 1
    monkeypatch.setattr(run_all, "DOC", doc)
    run_all.write_doc([("startup", "Start-up: --help", "python bench/startup.py", "x", ["command"])], "m", "d", 0.0,
                      False)
    text = doc.read_text()
    assert text.count(gpu_check.DOC_HEADING) == 1 and "NVIDIA H200 x1" in text and "lab_eval" in text
    assert text.index(gpu_check.DOC_HEADING) < text.index(gpu_check.DOC_MARKER) < text.index("hand-written")


# ----------------------------------------------------------------------------- gpu_throughput: fast


def test_gpu_throughput_help_documents_defaults_that_can_run(tmp_path):
    result = run_script([str(ROOT / "bench" / "gpu_throughput.py"), "--help"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    help_text = " ".join(result.stdout.split())
    assert "ceil(55,000 / 512) = 108 batches" in help_text and "330 steps, span 4 epochs" in help_text

    bench = bench_module("gpu_throughput")
    args = bench.build_parser().parse_args([])
    assert (args.steps, args.warmup, args.batch_size, args.val_size) == (300, 30, 512, 5000)
    per_epoch = bench.epoch_batches(60_000 - args.val_size, args.batch_size)
    bounds = bench.batch_bounds(60_000 - args.val_size, args.batch_size)
    assert per_epoch == len(bounds) == 108 and bounds[-1] == (107 * 512, 55_000)
    assert args.warmup + args.steps > per_epoch  # the defaults need more than one epoch: they must span epochs
    overrides = bench.overrides(args)
    assert "++trainer.max_steps=330" in overrides and "trainer.max_epochs=-1" in overrides
    assert not any(o.startswith("trainer.limit_train_batches") for o in overrides)
    cfg = compose(overrides)  # Hydra takes them: steps run across epochs, no checkpoint writes
    assert cfg.trainer.max_steps == 330 and cfg.trainer.max_epochs == -1 and cfg.trainer.limit_val_batches == 0
    assert "model_checkpoint" not in cfg.callbacks and "last_checkpoint" not in cfg.callbacks
    assert bench.epoch_batches(1025, 512) == 2  # a last batch of one image is dropped, as lab's loader does


# ----------------------------------------------------------------------------- slow: the scripts end to end


@pytest.mark.slow
def test_gpu_throughput_runs_its_steps_across_epochs(tmp_path):
    """The bug of issue 21: more steps than an epoch holds. 100 training images at batch 8 are 13
    batches an epoch; 4 + 12 steps need 2 epochs on both sides."""
    fashion = bench_module("gpu_check_data").make_fashion_mnist(tmp_path / "fashion", 150, 50)
    figures = tmp_path / "figures.json"
    result = run_script([str(ROOT / "bench" / "gpu_throughput.py"), "--device", "cpu", "--root", str(fashion),
                         "--val-size", "50", "--batch-size", "8", "--warmup", "4", "--steps", "12",
                         "--json", str(figures)], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(13 batches an epoch, 16 steps span 2 epochs)" in result.stdout
    assert "target <= 1.10x the plain loop's time" in result.stdout
    saved = json.loads(figures.read_text())
    assert saved["lab_images_per_s"] > 0 and saved["plain_images_per_s"] > 0 and saved["epoch_batches"] == 13


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="apt-get install dataset-fashion-mnist")
def test_gpu_throughput_cpu_smoke_on_the_real_fashion_mnist(tmp_path):
    result = run_script([str(ROOT / "bench" / "gpu_throughput.py"), "--device", "cpu", "--steps", "3",
                         "--warmup", "2", "--batch-size", "64"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(860 batches an epoch, 5 steps span 1 epochs)" in result.stdout
    assert "lab / plain:" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
def test_gpu_check_cpu_dry_run_passes_every_path(tmp_path):
    gpu_check = bench_module("gpu_check")
    out = tmp_path / "out"
    result = run_script([str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    record = json.loads((out / "figures.json").read_text())
    status = {r["path"]: r["status"] for r in record["results"]}
    sync = {f"sync:{name}" for name in ("fashion_mnist", "fashion_mnist_pinned", "triplet", "cifar10_224",
                                        "tinyimagenet")}
    runs = {"cnn_fashionmnist", "lab_eval", "cnn_fashionmnist_compile", "triplet_fashionmnist", "resnet50_224", "ddp",
            "function_gpu_vs_cpu", "throughput", "tinyimagenet_epoch"}
    skipped = sync | {"device_query"}  # no CUDA device to ask here
    assert status == {**{p: "SKIP" for p in skipped}, **{p: "PASS" for p in runs}}, result.stdout[-5000:]
    assert record["failed"] == 0 and not record["cuda"]
    assert f"figures: {out / 'figures.json'}" in result.stdout and "path " in result.stdout
    assert (out / "logs" / "cnn_fashionmnist.log").is_file()
    assert gpu_check.SKIP_LINE not in result.stdout
