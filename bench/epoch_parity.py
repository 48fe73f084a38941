"""Epoch parity: `experiment=cnn_fashionmnist` through lab vs a hand-written PyTorch loop.

Both train the same model (built by the same code from the same seed) on the real
Fashion-MNIST files for the same number of steps: the same batches (lab's in-memory uint8
tensors, the same seeded order), the same augmentation and normalisation (lab's batched
transform), AdamW with the same per-step warmup-cosine schedule, channels-last, and a
validation pass over the 5,000 val images after every epoch.

- lab: `lab.train.fit.train` on the config `python -m lab.run experiment=cnn_fashionmnist`
  composes, everything at its defaults (progress bar, TensorBoard scalars, train/val
  top-1/top-5, best and last checkpoints, the val confusion matrix image every epoch).
  Timed: `trainer.fit`.
- plain: zero_grad / forward / cross-entropy / backward / step / scheduler step, a running
  loss and accuracy kept as tensors (read once per epoch), then the validation loop.

How: by default the two take turns every 20 train steps and every validation batch in one
thread (lab's batch-end hooks run the plain loop's next 20 steps or next val batch, each side's
clock running only while it runs), because this VM's speed drifts by up to 10% between
back-to-back minute-long runs, and a second-long validation pass run as one block on each
side, half a minute apart, differed by up to 0.4 s either way; `--interleave 0` runs whole runs
back to back instead. `--control` times the plain loop against itself the same way (the
noise floor of the method). Printed: each pair's times and ratio and the median of the
per-pair ratios (the figure, target <= 1.03). `--floor` also times Lightning alone against the
plain loop the same way: the same model, data, optimizer and schedule in a ten-line
LightningModule and a Trainer with no callbacks, logger or checkpoints, dispatching hooks
Lightning's own way (its default profiler, so lab's dispatch, step and loop shortcuts stay out; only the
process-wide signature cache of lab.hook_dispatch, about 25 us a step, still applies): what
any Lightning framework pays before its own features. Lightning's own parity test is of this kind.
    .venv/bin/python bench/epoch_parity.py [--epochs 1] [--repeats 2] [--floor] [--root DIR] [--json FILE]
        [override ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import FASHION, compose, timed_fits  # noqa: E402  (bench/ is not a package)


@contextlib.contextmanager
def nvml_cuda_check(value: str | None):
    """PYTORCH_NVML_BASED_CUDA_CHECK set to `value` (None: unset) for the block, then as it was.
    Importing Lightning sets it to "1", which makes every AdamW step of a CUDA build look for
    libnvidia-ml; a script that never imports Lightning does not have it, and lab's
    build_trainer drops it on a machine without a GPU."""
    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    saved = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if saved is not None:
            os.environ[name] = saved


def as_plain_script():
    """The environment a plain PyTorch script runs in: no NVML-based CUDA check."""
    return nvml_cuda_check(None)


def run_lab(overrides: list[str], run_dir: Path) -> tuple[float, float]:
    """(trainer.fit seconds, final train/loss) of one lab run."""
    from lab.train.fit import train

    with timed_fits() as fits:
        metrics = train(compose([*overrides, "test=false"], run_dir))
    return fits[0][0], float(metrics["train/loss"])


def adamw_warmup_cosine(cfg, params, steps_per_epoch: int):
    """The optimizer and per-step schedule of `experiment=cnn_fashionmnist`, written out as a plain
    script would (the references' copy of what lab builds from cfg.optimizer and cfg.scheduler)."""
    import torch

    from lab.tasks.schedulers import warmup_cosine

    optimizer = torch.optim.AdamW(params, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay,
                                  betas=tuple(cfg.optimizer.betas))
    scheduler = warmup_cosine(optimizer, max_epochs=int(cfg.trainer.max_epochs),
                              warmup_epochs=cfg.scheduler.warmup_epochs,
                              warmup_start_factor=cfg.scheduler.warmup_start_factor,
                              min_lr_ratio=cfg.scheduler.min_lr_ratio, steps_per_epoch=steps_per_epoch)
    return optimizer, scheduler


def run_bare_lightning(overrides: list[str], run_dir: Path) -> None:
    """The plain loop's work as a bare LightningModule in a Trainer with no callbacks, logger or
    checkpoints and Lightning's default (pass-through) profiler, on lab's datamodule (its batch
    transform runs in the same hook as in lab)."""
    import lightning as L
    import torch

    from lab.build import build_parts

    cfg = compose([*overrides, "test=false"], run_dir)
    parts = build_parts(cfg)

    class Bare(L.LightningModule):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model.to(memory_format=torch.channels_last)
            self.loss_fn = torch.nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.loss_fn(self.model(x.contiguous(memory_format=torch.channels_last)), y)

        validation_step = training_step

        def configure_optimizers(self):
            steps = int(self.trainer.estimated_stepping_batches / self.trainer.max_epochs)
            optimizer, scheduler = adamw_warmup_cosine(cfg, self.parameters(), steps_per_epoch=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    trainer = L.Trainer(max_epochs=int(cfg.trainer.max_epochs), limit_train_batches=cfg.trainer.limit_train_batches,
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=run_dir)
    with nvml_cuda_check("1"):  # as after `import lightning`
        trainer.fit(Bare(parts.model), datamodule=parts.datamodule)


def plain_loop(overrides: list[str], steps: int | None = None, chunk: int = 0, result: dict | None = None):
    """The hand-written loop as a generator: it yields "train" after every `chunk` train steps and
    "val" after every val batch (never if `chunk` is 0), and fills `result` with the seconds spent
    running (in all, and validating), the final epoch's mean train loss and the last val top-1."""
    import torch
    from hydra.utils import instantiate

    from lab.build import instantiate_node

    result = {} if result is None else result
    cfg = compose(overrides)
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data, seed=cfg.seed)
    data.setup("fit")
    model = instantiate_node(cfg.model, **data.model_inputs())
    model = model.to(memory_format=torch.channels_last)
    epochs = int(cfg.trainer.max_epochs)
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()
    optimizer, scheduler = adamw_warmup_cosine(cfg, model.parameters(),
                                               steps_per_epoch=min(len(train_loader), steps or len(train_loader)))
    augment, plain = data.batch_transform(True), data.batch_transform(False)
    loss_fn = torch.nn.CrossEntropyLoss()

    running, val_seconds, started = 0.0, 0.0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loss_sum, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
        for step, (x, y) in enumerate(train_loader):
            if steps is not None and step >= steps:
                break
            x = augment(x).contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if chunk and (step + 1) % chunk == 0:
                running += time.perf_counter() - started
                yield "train"
                started = time.perf_counter()
        train_loss = (loss_sum / seen).item()
        val_started = time.perf_counter()
        model.eval()
        val_correct, val_seen = 0, 0
        for x, y in val_loader:
            with torch.no_grad():  # per batch: grad mode is thread state, and the loop yields between batches
                logits = model(plain(x).contiguous(memory_format=torch.channels_last))
            val_correct += int((logits.argmax(1) == y).sum())
            val_seen += len(y)
            if chunk:
                now = time.perf_counter()
                val_seconds += now - val_started
                running += now - started
                yield "val"
                started = val_started = time.perf_counter()
        val_seconds += time.perf_counter() - val_started
    running += time.perf_counter() - started
    result.update(seconds=running, val_seconds=val_seconds, train_loss=train_loss, val_top1=val_correct / val_seen)


def run_plain(overrides: list[str], steps: int | None = None) -> tuple[float, float, float]:
    """(seconds, final epoch's mean train loss, last val top-1) of the hand-written loop, alone."""
    result: dict = {}
    with as_plain_script():
        for _ in plain_loop(overrides, steps, 0, result):
            pass
    return result["seconds"], result["train_loss"], result["val_top1"]


def run_interleaved(overrides: list[str], run_dir: Path, steps: int | None, chunk: int,
                    bare: bool = False) -> tuple[dict, dict]:
    """(lab's seconds, plain's seconds) with the two taking turns every `chunk` train steps; each
    a dict of "total", "train" (the train batches), "val" (validation) and "other" (the rest:
    set-up, epoch ends, checkpoints, logging).

    Both run in this one thread, as in `python -m lab.run`: lab's trainer.fit calls the plain
    loop's next `chunk` steps from its own batch-end hook and stops its clock while they run.
    A slow minute of the machine then slows both sides alike, where back-to-back runs of a
    minute each differ by up to 10% on this VM; one thread means one OpenMP thread team and no
    second Python thread contending for the interpreter. `bare`: Lightning alone (run_bare_lightning)
    takes lab's place."""
    import lightning as L
    import torch

    from lab.train.fit import train

    plain_result: dict = {}
    plain = plain_loop(overrides, steps, chunk, plain_result)
    paused = [0.0]
    lab = {"train": 0.0, "val": 0.0}
    marks: dict = {"chunk": 0.0}
    chunks: list[tuple[float, float]] = []  # (lab, plain) seconds of each turn's `chunk` train steps

    def lab_clock() -> float:
        return time.perf_counter() - paused[0]

    def hand_over(train_turn: bool = True) -> None:
        if "seconds" in plain_result:
            return
        start = time.perf_counter()
        # as a script's top level runs it, also when handed over from inside lab's validation
        with as_plain_script(), torch.inference_mode(False), torch.enable_grad():
            ran = next(plain, None)
        paused[0] += time.perf_counter() - start
        if train_turn and ran == "train":  # a whole turn of train steps on both sides
            chunks.append((lab["train"] - marks["chunk"], time.perf_counter() - start))
        marks["chunk"] = lab["train"]

    class HandOver(L.Callback):
        """Times lab's phases on its own clock and hands over every `chunk` batches."""

        def on_train_epoch_start(self, trainer, pl_module):
            marks["batch"] = lab_clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # since the last batch ended: fetching, augmenting and training on this one
            lab["train"] += lab_clock() - marks["batch"]
            if (batch_idx + 1) % chunk == 0:
                hand_over()
            marks["batch"] = lab_clock()

        def on_validation_start(self, trainer, pl_module):
            marks["val"] = lab_clock()

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            if not trainer.sanity_checking:
                hand_over(train_turn=False)  # the plain loop's next val batch (or the end of its epoch)

        def on_validation_end(self, trainer, pl_module):
            lab["val"] += lab_clock() - marks.pop("val")

    with as_plain_script():
        next(plain)  # the plain side builds its model and data, then runs its first chunk
    with timed_fits(HandOver(), clocks=(lab_clock,)) as fits:
        if bare:
            run_bare_lightning(overrides, run_dir)
        else:
            train(compose([*overrides, "test=false"], run_dir))
    with as_plain_script():
        for _ in plain:  # lab finished first: the rest of the plain loop
            pass
    lab["total"] = fits[0][0]
    lab["other"] = lab["total"] - lab["train"] - lab["val"]
    plain_times = {"total": plain_result["seconds"], "val": plain_result["val_seconds"]}
    plain_times["train"] = plain_times["total"] - plain_times["val"]
    plain_times["other"] = 0.0
    lab["chunks"] = plain_times["chunks"] = chunks
    return lab, plain_times


def parts_line(side: dict, plain: dict) -> str:
    """train / val / other seconds of both sides and the spread of the per-turn ratios."""
    turns = sorted(a / b for a, b in side["chunks"])
    parts = "   ".join(f"{part} {side[part]:.2f} s vs {plain[part]:.2f} s" for part in ("train", "val", "other"))
    return (f"        {parts}   turns: median ratio {statistics.median(turns):.3f} "
              f"(quartiles {turns[len(turns) // 4]:.3f}-{turns[3 * len(turns) // 4]:.3f}, {len(turns)} turns)")


def run_control(overrides: list[str], steps: int | None, chunk: int) -> tuple[float, float]:
    """(first loop's seconds, second loop's seconds) of the plain loop against itself, taking
    turns exactly like run_interleaved: what the method reads when both sides are equal."""
    first: dict = {}
    second: dict = {}
    a, b = plain_loop(overrides, steps, chunk, first), plain_loop(overrides, steps, chunk, second)
    done_a = done_b = False
    with as_plain_script():
        while not (done_a and done_b):
            done_a = done_a or next(a, StopIteration) is StopIteration
            done_b = done_b or next(b, StopIteration) is StopIteration
    return first["seconds"], second["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra lab overrides")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="lab/plain pairs")
    parser.add_argument("--steps", type=int, help="train steps per epoch (default: the whole epoch, 860)")
    parser.add_argument("--root", default=FASHION, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--interleave", type=int, default=20, metavar="N",
                        help="lab and plain take turns every N train steps in one process (default 20); "
                             "0: whole runs back to back, alternating which goes first")
    parser.add_argument("--control", action="store_true",
                        help="also time the plain loop against itself the same way (the method's noise floor)")
    parser.add_argument("--floor", action="store_true",
                        help="also time a bare LightningModule in a bare Trainer against the plain loop the same way "
                             "(Lightning's own cost, as it ships)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if not (Path(args.root) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"error: no Fashion-MNIST in {args.root}; apt-get install dataset-fashion-mnist or pass --root")

    import warnings

    import torch

    warnings.filterwarnings("ignore")
    overrides = ["experiment=cnn_fashionmnist", f"data.root={args.root}", "data.download=false",
                 f"trainer.max_epochs={args.epochs}", *args.overrides]
    if args.steps:
        overrides.append(f"trainer.limit_train_batches={args.steps}")
    pairs, floors, lines = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-epoch-") as tmp:
        for rep in range(args.repeats):
            if args.interleave:
                lab_t, plain_t = run_interleaved(overrides, Path(tmp) / f"lab{rep}", args.steps, args.interleave)
                pairs.append((lab_t["total"], plain_t["total"]))
                lines.append(f"pair {rep + 1}: lab fit {lab_t['total']:.2f} s   plain {plain_t['total']:.2f} s   "
                             f"ratio {lab_t['total'] / plain_t['total']:.3f}   "
                             f"(taking turns every {args.interleave} steps)")
                lines.append(parts_line(lab_t, plain_t))
                if args.floor:
                    bare_t, plain_b = run_interleaved(overrides, Path(tmp) / f"bare{rep}", args.steps, args.interleave,
                                                      bare=True)
                    floors.append((bare_t["total"], plain_b["total"]))
                    lines.append(f"floor {rep + 1}: Lightning alone fit {bare_t['total']:.2f} s   plain "
                                 f"{plain_b['total']:.2f} s   ratio {bare_t['total'] / plain_b['total']:.3f}")
                    lines.append(parts_line(bare_t, plain_b))
                continue
            if rep % 2:
                lab_s, lab_loss = run_lab(overrides, Path(tmp) / f"lab{rep}")
                plain_s, plain_loss, plain_val = run_plain(overrides, args.steps)
            else:
                plain_s, plain_loss, plain_val = run_plain(overrides, args.steps)
                lab_s, lab_loss = run_lab(overrides, Path(tmp) / f"lab{rep}")
            pairs.append((lab_s, plain_s))
            lines.append(f"pair {rep + 1}: lab fit {lab_s:.2f} s (train/loss {lab_loss:.5f})   plain {plain_s:.2f} s "
                         f"(train loss {plain_loss:.5f}, val top-1 {plain_val:.4f})   ratio {lab_s / plain_s:.3f}")
        if args.control and args.interleave:
            a, b = run_control(overrides, args.steps, args.interleave)
            lines.append(f"control: plain {a:.2f} s vs plain {b:.2f} s, ratio {a / b:.3f} "
                         "(the same loop on both sides: the method's own error)")
    print("\n" + "\n".join(lines))
    ratio = statistics.median(a / b for a, b in pairs)
    lab_epoch = statistics.median(a for a, _ in pairs) / args.epochs
    plain_epoch = statistics.median(b for _, b in pairs) / args.epochs
    machine = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), "
               f"{platform.processor() or platform.machine()}")
    print(f"\nFashion-MNIST, cnn_fashionmnist, {args.epochs} epoch(s) per run, {args.repeats} pairs; {machine}")
    print(f"lab   per epoch: {lab_epoch:.2f} s (median)\nplain per epoch: {plain_epoch:.2f} s (median)")
    print(f"lab / plain: {ratio:.3f}  (median of the pairs' ratios; target <= 1.03)")
    floor = statistics.median(a / b for a, b in floors) if floors else None
    if floor is not None:
        print(f"Lightning alone / plain: {floor:.3f}  (median; Lightning's loop as it ships, without lab's features "
              "or its dispatch, step and loop shortcuts)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "lab_s_per_epoch": lab_epoch, "plain_s_per_epoch": plain_epoch, "ratio": ratio,
            "pairs": pairs, "floor_pairs": floors, "floor_ratio": floor, "epochs": args.epochs, "machine": machine},
            indent=2))


if __name__ == "__main__":
    main()
