"""Epoch parity: `experiment=cnn_fashionmnist` through lab, through a bare Lightning Trainer, and as a plain loop.

Three sides train the same model (built by the same code from the same seed) on the real
Fashion-MNIST files for the same number of steps: the same batches (lab's in-memory uint8
tensors, the same seeded order, batch size 64), the same augmentation and normalisation (lab's
batched transform), AdamW with the same per-step warmup-cosine schedule, channels-last, and a
validation pass over the 5,000 val images after every epoch. All on the CPU.

- lab: `lab.train.fit.train` on the config `python -m lab.run experiment=cnn_fashionmnist`
  composes, everything at its defaults (progress bar, TensorBoard scalars, train/val
  top-1/top-5, best and last checkpoints, the val confusion matrix image every epoch), with
  Lightning's loop as it ships. Timed: `trainer.fit` (from the
  callbacks' setup hook to their teardown).
- bare Lightning: the plain loop's work as a LightningModule (the same model class, loaders,
  transforms, loss, optimizer and schedule; a running loss and accuracy kept as tensors, no
  `self.log`) in a default Trainer with logger=False, enable_checkpointing=False,
  enable_progress_bar=False, enable_model_summary=False, and lab's settings that make it the
  same work (no sanity check, the CPU, the epoch and step limits); no lab callbacks, no lab
  datamodule hooks. Timed: `trainer.fit`. What any Lightning framework pays before its features.
- plain: zero_grad / forward / cross-entropy / backward / step / scheduler step, a running
  loss and accuracy kept as tensors (read once per epoch), then the validation loop. It runs
  as a script that never imports Lightning would (`PYTORCH_NVML_BASED_CUDA_CHECK` unset).
- control: the plain loop against itself.

How: lab, bare Lightning and the control are each timed against the plain loop. The two sides
of a pair take turns every 20 train steps and every validation batch in one thread (a Trainer's
batch-end hooks run the plain loop's next 20 steps or next val batch, each side's clock running
only while it runs), because this VM's speed drifts by up to 10% between back-to-back
minute-long runs; `--interleave 0` runs whole runs back to back instead, alternating which goes
first. One repeat is a lab pair, a bare-Lightning pair and a control pair (their order rotating
from repeat to repeat). Printed: each pair's times and ratio; the median over the repeats of
lab / plain, bare Lightning / plain, lab / bare Lightning (each repeat's lab ratio over its bare
ratio: the plain loop is the yardstick that carries the comparison across the two pairs) and
the control; the method's error (the control's largest distance from 1); and the verdicts:
lab within the control's error of bare Lightning, and lab at most 1.06x the plain loop.
    .venv/bin/python bench/epoch_parity.py [--quick] [--epochs 1] [--repeats 2] [--steps N]
        [--interleave 20] [--root DIR] [--json FILE] [override ...]
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

from common import FASHION, compose, fit_clock  # noqa: E402  (bench/ is not a package)

PLAIN_TARGET = 1.06  # lab / plain, at most


@contextlib.contextmanager
def as_plain_script():
    """The environment a plain PyTorch script runs in, for the block: importing Lightning sets
    PYTORCH_NVML_BASED_CUDA_CHECK=1 (torch's Adam/AdamW then look for libnvidia-ml on every step
    of a CUDA build); a script that never imports Lightning does not have it."""
    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


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


def reference_parts(overrides: list[str]):
    """(config, datamodule set up without a trainer, channels-last model): what the plain loop
    and the bare LightningModule start from, seeded and built in lab's order."""
    import torch
    from hydra.utils import instantiate

    from lab.build import instantiate_node
    from lab.utils.seeds import stream_seed

    cfg = compose(overrides)
    data = instantiate(cfg.data, seed=cfg.seed)
    data.setup("fit")
    torch.manual_seed(stream_seed(cfg.seed, "weights", bits=32))  # lab's initial-weights stream
    model = instantiate_node(cfg.model, **data.model_inputs())
    return cfg, data, model.to(memory_format=torch.channels_last)


def run_lab(overrides: list[str], run_dir: Path, callbacks: tuple = ()) -> None:
    """One lab run, `python -m lab.run`'s train function, without the test of the best checkpoint;
    `callbacks` join the config's."""
    from lab.train.fit import train

    train(compose([*overrides, "test=false"], run_dir), callbacks=callbacks)


def run_bare_lightning(overrides: list[str], run_dir: Path, callbacks: tuple = ()) -> None:
    """The plain loop's work as a LightningModule in a bare Trainer (see the module doc), with
    `callbacks` (the bench's clocks)."""
    import lightning as L
    import torch

    cfg, data, model = reference_parts(overrides)
    augment, plain = data.batch_transform(True), data.batch_transform(False)

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.loss_fn = torch.nn.CrossEntropyLoss()

        def on_train_epoch_start(self) -> None:
            self.loss_sum, self.correct, self.seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.model(augment(x).contiguous(memory_format=torch.channels_last))
            loss = self.loss_fn(logits, y)
            self.loss_sum += loss.detach() * len(y)
            self.correct += (logits.detach().argmax(1) == y).sum()
            self.seen += len(y)
            return loss

        def on_train_epoch_end(self) -> None:
            self.train_loss = (self.loss_sum / self.seen).item()

        def on_validation_epoch_start(self) -> None:
            self.val_correct, self.val_seen = 0, 0

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.model(plain(x).contiguous(memory_format=torch.channels_last))
            self.val_correct += int((logits.argmax(1) == y).sum())
            self.val_seen += len(y)

        def configure_optimizers(self):
            steps = int(self.trainer.estimated_stepping_batches / self.trainer.max_epochs)
            optimizer, scheduler = adamw_warmup_cosine(cfg, self.parameters(), steps_per_epoch=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # A default Trainer, plus what makes it the same work as the other two: lab's (and the plain
    # loop's) no sanity check, the CPU, the epoch and step limits.
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=int(cfg.trainer.num_sanity_val_steps),
                        accelerator="cpu", max_epochs=int(cfg.trainer.max_epochs),
                        limit_train_batches=cfg.trainer.limit_train_batches,
                        limit_val_batches=cfg.trainer.limit_val_batches, default_root_dir=run_dir,
                        callbacks=list(callbacks))
    trainer.fit(Bare(), train_dataloaders=data.train_dataloader(), val_dataloaders=data.val_dataloader())


SIDES = {"lab": run_lab, "bare": run_bare_lightning}


def plain_loop(overrides: list[str], steps: int | None = None, chunk: int = 0, result: dict | None = None):
    """The hand-written loop as a generator: it yields "train" after every `chunk` train steps and
    "val" after every val batch (never if `chunk` is 0), and fills `result` with the seconds spent
    running (in all, and validating), the final epoch's mean train loss and the last val top-1."""
    import torch

    result = {} if result is None else result
    cfg, data, model = reference_parts(overrides)
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


def warm_up(overrides: list[str], run_dir: Path) -> None:
    """A 2-step run of each side, untimed: the first fit in a process imports TensorBoard's writer
    and more, and the first convolutions set up oneDNN's kernels; no timed run should pay that."""
    short = [o for o in overrides if not o.startswith(("trainer.limit_train_batches=", "trainer.limit_val_batches="))]
    short += ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    with as_plain_script():
        for _ in plain_loop(short, steps=2):
            pass
    for side, run in SIDES.items():
        run(short, run_dir / f"warm-up-{side}")


def run_plain(overrides: list[str], steps: int | None = None) -> float:
    """Seconds of the hand-written loop, alone."""
    result: dict = {}
    with as_plain_script():
        for _ in plain_loop(overrides, steps, 0, result):
            pass
    return result["seconds"]


def run_alone(side: str, overrides: list[str], run_dir: Path) -> float:
    """`trainer.fit` seconds of one lab or bare-Lightning run, alone."""
    clock = fit_clock()
    SIDES[side](overrides, run_dir, (clock,))
    return clock.fits[0][0]


def run_interleaved(side: str, overrides: list[str], run_dir: Path, steps: int | None,
                    chunk: int) -> tuple[dict, dict]:
    """(the side's seconds, plain's seconds), lab or bare Lightning (`side`) taking turns with the
    plain loop every `chunk` train steps and every val batch; each a dict of "total", "train"
    (the train batches), "val" (validation), "other" (the rest: set-up, epoch ends, checkpoints,
    logging) and "chunks" (the (side, plain) seconds of each whole turn of train steps).

    Both run in this one thread, as in `python -m lab.run`: the Trainer calls the plain loop's
    next `chunk` steps from its own batch-end hook and stops its clock while they run. A slow
    minute of the machine then slows both sides alike; one thread means one OpenMP thread team
    and no second Python thread contending for the interpreter."""
    import lightning as L
    import torch

    plain_result: dict = {}
    plain = plain_loop(overrides, steps, chunk, plain_result)
    paused = [0.0]
    mine = {"train": 0.0, "val": 0.0}
    marks: dict = {"chunk": 0.0}
    chunks: list[tuple[float, float]] = []

    def my_clock() -> float:
        return time.perf_counter() - paused[0]

    def hand_over(train_turn: bool = True) -> None:
        if "seconds" in plain_result:
            return
        start = time.perf_counter()
        # as a script's top level runs it, also when handed over from inside a validation loop
        with as_plain_script(), torch.inference_mode(False), torch.enable_grad():
            ran = next(plain, None)
        paused[0] += time.perf_counter() - start
        if train_turn and ran == "train":  # a whole turn of train steps on both sides
            chunks.append((mine["train"] - marks["chunk"], time.perf_counter() - start))
        marks["chunk"] = mine["train"]

    class HandOver(L.Callback):
        """Times the Trainer's phases on its own clock and hands over every `chunk` batches."""

        def on_train_epoch_start(self, trainer, pl_module):
            marks["batch"] = my_clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # since the last batch ended: fetching, augmenting and training on this one
            mine["train"] += my_clock() - marks["batch"]
            if (batch_idx + 1) % chunk == 0:
                hand_over()
            marks["batch"] = my_clock()

        def on_validation_start(self, trainer, pl_module):
            marks["val"] = my_clock()

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            if not trainer.sanity_checking:
                hand_over(train_turn=False)  # the plain loop's next val batch (or the end of its epoch)

        def on_validation_end(self, trainer, pl_module):
            mine["val"] += my_clock() - marks.pop("val")

    with as_plain_script():
        next(plain)  # the plain side builds its model and data, then runs its first chunk
    clock = fit_clock((my_clock,))
    SIDES[side](overrides, run_dir, (HandOver(), clock))
    with as_plain_script():
        for _ in plain:  # the Trainer finished first: the rest of the plain loop
            pass
    mine["total"] = clock.fits[0][0]
    mine["other"] = mine["total"] - mine["train"] - mine["val"]
    plain_times = {"total": plain_result["seconds"], "val": plain_result["val_seconds"]}
    plain_times["train"] = plain_times["total"] - plain_times["val"]
    plain_times["other"] = 0.0
    mine["chunks"] = plain_times["chunks"] = chunks
    return mine, plain_times


def parts_line(side: dict, plain: dict) -> str:
    """train / val / other seconds of both sides and the spread of the per-turn ratios."""
    turns = sorted(a / b for a, b in side["chunks"])
    parts = "   ".join(f"{part} {side[part]:.2f} s vs {plain[part]:.2f} s" for part in ("train", "val", "other"))
    if not turns:
        return f"        {parts}"
    return (f"        {parts}   turns: median ratio {statistics.median(turns):.3f} "
            f"(quartiles {turns[len(turns) // 4]:.3f}-{turns[3 * len(turns) // 4]:.3f}, {len(turns)} turns)")


def run_control(overrides: list[str], steps: int | None, chunk: int) -> tuple[float, float]:
    """(first loop's seconds, second loop's seconds) of the plain loop against itself, taking
    turns exactly like run_interleaved (whole runs back to back if `chunk` is 0): what the
    method reads when both sides are equal."""
    if not chunk:
        return run_plain(overrides, steps), run_plain(overrides, steps)
    first: dict = {}
    second: dict = {}
    a, b = plain_loop(overrides, steps, chunk, first), plain_loop(overrides, steps, chunk, second)
    done_a = done_b = False
    with as_plain_script():
        while not (done_a and done_b):
            done_a = done_a or next(a, StopIteration) is StopIteration
            done_b = done_b or next(b, StopIteration) is StopIteration
    return first["seconds"], second["seconds"]


LABELS = {"lab": "lab", "bare": "bare Lightning"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra lab overrides")
    parser.add_argument("--quick", action="store_true",
                        help="a rough look: 1 repeat of 200 train steps (unless --repeats/--steps say otherwise)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, help="repeats of (lab, bare Lightning, control) pairs (default 2)")
    parser.add_argument("--steps", type=int, help="train steps per epoch (default: the whole epoch, 860)")
    parser.add_argument("--root", default=FASHION, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--interleave", type=int, default=20, metavar="N",
                        help="each side and the plain loop take turns every N train steps in one process "
                             "(default 20); 0: whole runs back to back, alternating which goes first")
    # The bare-Lightning pairs and the control always run now; the old switches are still accepted.
    parser.add_argument("--control", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    steps = args.steps or (200 if args.quick else None)
    if not (Path(args.root) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"error: no Fashion-MNIST in {args.root}; apt-get install dataset-fashion-mnist or pass --root")

    import warnings

    import torch

    warnings.filterwarnings("ignore")
    overrides = ["experiment=cnn_fashionmnist", f"data.root={args.root}", "data.download=false",
                 f"trainer.max_epochs={args.epochs}", "trainer.accelerator=cpu", *args.overrides]
    if steps:
        overrides.append(f"trainer.limit_train_batches={steps}")
    pairs: dict[str, list[tuple[float, float]]] = {"lab": [], "bare": [], "control": []}
    lines = []

    def report(line: str) -> None:
        """Keeps `line` for the summary and shows it now on stderr (a full run takes many minutes)."""
        lines.append(line)
        print(line, file=sys.stderr, flush=True)

    how = f"(taking turns every {args.interleave} steps)" if args.interleave else "(whole runs back to back)"
    with tempfile.TemporaryDirectory(prefix="bench-epoch-") as tmp:
        warm_up(overrides, Path(tmp))
        for rep in range(repeats):
            order = ["lab", "bare", "control"]
            order = order[rep % 3:] + order[:rep % 3]
            for side in order:
                if side == "control":
                    a, b = run_control(overrides, steps, args.interleave)
                    pairs["control"].append((a, b))
                    report(f"control {rep + 1}: plain {a:.2f} s vs plain {b:.2f} s   ratio {a / b:.3f}   "
                           "(the same loop on both sides: the method's own error)")
                    continue
                run_dir = Path(tmp) / f"{side}{rep}"
                if args.interleave:
                    mine, plain = run_interleaved(side, overrides, run_dir, steps, args.interleave)
                    mine_s, plain_s = mine["total"], plain["total"]
                elif rep % 2:
                    mine_s = run_alone(side, overrides, run_dir)
                    plain_s = run_plain(overrides, steps)
                else:
                    plain_s = run_plain(overrides, steps)
                    mine_s = run_alone(side, overrides, run_dir)
                pairs[side].append((mine_s, plain_s))
                report(f"{LABELS[side]} {rep + 1}: fit {mine_s:.2f} s   plain {plain_s:.2f} s   "
                       f"ratio {mine_s / plain_s:.3f}   {how}")
                if args.interleave:
                    report(parts_line(mine, plain))
    print("\n" + "\n".join(lines))  # on stdout, together, after the Trainers' own output

    ratios = {side: [a / b for a, b in found] for side, found in pairs.items()}
    ratios["lab/bare"] = [lab / bare for lab, bare in zip(ratios["lab"], ratios["bare"])]
    median = {side: statistics.median(found) for side, found in ratios.items()}
    error = max(abs(r - 1) for r in ratios["control"])
    per_epoch = {side: statistics.median(a for a, _ in pairs[side]) / args.epochs for side in ("lab", "bare")}
    per_epoch["plain"] = statistics.median(b for _, b in pairs["lab"]) / args.epochs
    machine = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), "
               f"{platform.processor() or platform.machine()}")
    epoch_steps = f"{steps} train steps" if steps else "whole epochs"
    print(f"\nFashion-MNIST, cnn_fashionmnist, {args.epochs} epoch(s) per run ({epoch_steps}), {repeats} repeat(s) "
          f"{how}; {machine}")
    print(f"per epoch (median): lab {per_epoch['lab']:.2f} s   bare Lightning {per_epoch['bare']:.2f} s   "
          f"plain {per_epoch['plain']:.2f} s")
    rows = [("lab / plain", "lab"), ("bare Lightning / plain", "bare"), ("lab / bare Lightning", "lab/bare"),
            ("control: plain / plain", "control")]
    print(f"{'ratio':<24}{'median':>8}   each repeat")
    for label, key in rows:
        print(f"{label:<24}{median[key]:>8.3f}   " + " ".join(f"{r:.3f}" for r in ratios[key]))
    print(f"method's error: {error:.3f} (the control's largest distance from 1, {len(ratios['control'])} control "
          "pair(s))")
    lab_bare, lab_plain = median["lab/bare"], median["lab"]
    if abs(lab_bare - 1) <= error:
        within = f"yes (lab / bare Lightning {lab_bare:.3f}, within 1 +- {error:.3f})"
    elif lab_bare < 1:
        within = f"no, lab is faster (lab / bare Lightning {lab_bare:.3f} < 1 - {error:.3f})"
    else:
        within = f"no (lab / bare Lightning {lab_bare:.3f} > 1 + {error:.3f})"
    print(f"verdict: lab within the control's error of bare Lightning: {within}")
    print(f"verdict: lab at most {PLAIN_TARGET:.2f}x the plain loop: {'yes' if lab_plain <= PLAIN_TARGET else 'no'} "
          f"(lab / plain {lab_plain:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "epochs": args.epochs, "steps": steps, "repeats": repeats, "interleave": args.interleave,
            "machine": machine, "s_per_epoch": per_epoch, "pairs": pairs, "ratios": ratios, "medians": median,
            "ratio": lab_plain, "error": error, "within_error_of_bare": abs(lab_bare - 1) <= error,
            "within_plain_target": lab_plain <= PLAIN_TARGET}, indent=2))


if __name__ == "__main__":
    main()
