"""bench/gpu_check.py's workers, each run in a subprocess of its own: the host-sync check of the
data paths (under torch.cuda.set_sync_debug_mode("error")) and a timed fit."""

from __future__ import annotations

import time
import traceback
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- worker: host-sync check


@contextmanager
def no_host_sync(device):
    """Any host sync on a CUDA `device` raises inside this block (torch's sync debug mode)."""
    import torch

    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def is_sync_error(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and "synchronizing" in str(err)


def lab_frame(err: BaseException) -> str:
    """The innermost lab/ source line of an exception's traceback (where lab asked for the sync)."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(ROOT / "lab")]
    if not frames:
        return "?"
    f = (ours or frames)[-1]
    where = Path(f.filename).resolve()
    return f"{where.relative_to(ROOT) if where.is_relative_to(ROOT) else where}:{f.lineno} ({(f.line or '').strip()})"


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def guard_works(device) -> bool:
    """The check checks itself: a known sync (.item()) must raise inside no_host_sync."""
    import torch

    x = torch.ones(2, device=device)
    try:
        with no_host_sync(device):
            x.sum().item()
    except RuntimeError as err:
        return is_sync_error(err)
    return False


def check_data_path(overrides: list[str], device, run_dir: Path, fill_gpu: bool = False) -> list[dict]:
    """One data path through lab's public pieces: lab.build.build_parts / build_trainer, the
    datamodule's loaders and batch hooks, the task's training_step / validation_step and the
    confusion-matrix callback. A warm-up batch first (epoch start, lazy states, cudnn autotuning),
    then each stage of the next batch under no_host_sync. Returns one dict per stage.

    `fill_gpu`: the GPU is filled while the train loader is made, so that the training split does not
    fit (lab keeps a split on the GPU only within half its free memory) and stays in host memory with
    pinned, non-blocking batch copies; the filler is freed before the first batch."""
    import torch
    from common import compose

    from lab.build import build_parts, build_trainer
    from lab.callbacks.confusion import ConfusionMatrixLogger

    cfg = compose(overrides, run_dir)
    parts = build_parts(cfg)
    trainer = build_trainer(cfg, fitting=False, loggers=False)
    dm, task = parts.datamodule, parts.task
    dm.trainer = trainer  # the datamodule sees the device and the stage as in trainer.fit
    task.to(device)
    task.setup("fit")
    confusion = [cb for cb in trainer.callbacks if isinstance(cb, ConfusionMatrixLogger)]
    stages: list[dict] = []

    def prepare(raw):
        batch = dm.on_before_batch_transfer(raw, 0)
        return dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, device, 0), 0)

    def stage(name: str, fn, fallback=None):
        """fn() under no_host_sync; a sync (or any error) is this stage's failure, and `fallback`
        stands in for its output so that the later stages still run."""
        try:
            with no_host_sync(device):
                out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stages.append({"stage": name, "ok": True})
            return out
        except Exception as err:  # noqa: BLE001 - recorded with where it happened
            stages.append({"stage": name, "ok": False, "where": lab_frame(err), "error": one_line(err)})
            return fallback

    def train_step(batch):
        with trainer.precision_plugin.forward_context():
            loss = task.training_step(batch, 0)
        loss.backward()

    def val_step(batch):
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            out = task.validation_step(batch, 0)
            for cb in confusion:
                cb.on_validation_batch_end(trainer, task, out, batch, 0)

    trainer.training = True
    task.train()
    filler = fill_device(device, sum(t.nbytes for t in dm.splits["train"])) if fill_gpu else None
    loader = dm.train_dataloader()
    del filler
    if fill_gpu and device.type == "cuda":
        torch.cuda.empty_cache()
        where = dm.splits["train"][0].device
        stages.append({"stage": "host-memory fallback: train split kept off a full GPU", "ok": where.type == "cpu",
                       "where": "lab/data/memory.py", "error": f"the split moved to {where} although it did not fit"})
    batches = iter(loader)
    warm = prepare(next(batches))
    train_step(warm)
    batch = stage("train batch: loader, transfer, augmentation", lambda: prepare(next(batches)), warm)
    stage("train step: forward, loss, metric updates, backward", lambda: train_step(batch))

    trainer.validating = True
    task.eval()
    batches = iter(dm.val_dataloader())
    warm = prepare(next(batches))
    val_step(warm)
    batch = stage("val batch: loader, transfer, transform", lambda: prepare(next(batches)), warm)
    stage("val step: forward, metric updates, confusion matrix", lambda: val_step(batch))
    return stages


def fill_device(device, leave: int):
    """A tensor that takes all but about `leave` bytes of the device's free memory (None on the CPU)."""
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(device)[0]
    for margin in (1.0, 1.5, 1.9):  # what the allocator rounds up may not fit at first
        try:
            return torch.empty(max(free - int(margin * leave), 0), dtype=torch.uint8, device=device)
        except torch.OutOfMemoryError:
            continue
    return None


def device_info(device) -> dict:
    import torch

    if device.type != "cuda":
        return {"name": "CPU", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda}


def sync_worker(spec: dict) -> dict:
    import torch

    device = torch.device(spec["device"])
    out = {"device": device_info(device), "guard_works": guard_works(device) if device.type == "cuda" else None,
           "paths": []}
    for name, overrides, run_dir, fill in spec["paths"]:
        try:
            stages = check_data_path(overrides, device, Path(run_dir), fill_gpu=fill)
        except Exception as err:  # noqa: BLE001 - reported as this path's failure; the next path still runs
            stages = [{"stage": "build and warm-up", "ok": False, "where": lab_frame(err), "error": one_line(err)}]
        out["paths"].append({"name": name, "stages": stages})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------- worker: a timed fit


def probe_callback(device):
    """A callback that times each train epoch's batches and each validation, counts their images
    and reads the peak GPU memory of the fit (torch.cuda.max_memory_allocated)."""
    import lightning as L
    import torch

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    class Probe(L.Callback):
        def __init__(self) -> None:
            self.train: list[tuple[float, int]] = []  # (seconds, images) of each epoch's training batches
            self.val: list[tuple[float, int]] = []
            self.info: dict = {}
            self._start = self._val_start = None
            self._images = self._val_images = 0

        def on_fit_start(self, trainer, pl_module) -> None:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            self.info = {"root_device": str(trainer.strategy.root_device), "precision": str(trainer.precision)}

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start, self._images = now(), 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._images += len(batch[1])

        def _close_train(self) -> None:
            if self._start is not None:
                self.train.append((now() - self._start, self._images))
                self._start = None

        def on_validation_epoch_start(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self._close_train()
                self._val_start, self._val_images = now(), 0

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            self._val_images += len(batch[1])

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if self._val_start is not None:
                self.val.append((now() - self._val_start, self._val_images))
                self._val_start = None

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._close_train()

        def on_fit_end(self, trainer, pl_module) -> None:
            if device.type == "cuda":
                self.info["fit_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30

    return Probe()


def fit_worker(spec: dict) -> dict:
    import torch
    from common import compose

    from lab.train.fit import train

    device = torch.device(spec["device"])
    probe = probe_callback(device)
    metrics = train(compose(spec["overrides"], Path(spec["run_dir"])), callbacks=[probe])
    out = {"metrics": metrics, "train_epochs": probe.train, "val_epochs": probe.val, **probe.info}
    if device.type == "cuda":
        out["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30  # the test of the best checkpoint too
    return out


