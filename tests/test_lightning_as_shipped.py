"""Lightning, Hydra and torch run as shipped: a lab run replaces none of their functions, methods
or class attributes, no lab class overrides their private methods, and the profiler and the
checkpoint callback see and do what Lightning shows them."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import QUICK, ROOT, compose

THIRD_PARTY = ("lightning", "hydra", "torch", "torchmetrics", "omegaconf")

# In a fresh process: snapshot every loaded Lightning/Hydra/torch module and class, run a lab job
# (fit, test, TensorBoard, HParams, pictures), and list whatever was replaced.
SNAPSHOT_RUN = textwrap.dedent("""
    import inspect, json, sys
    import lightning.pytorch, lightning.fabric, hydra, torch, torchmetrics, omegaconf, torch.utils.tensorboard
    from lightning.pytorch.strategies.launchers import subprocess_script
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_script
    PREFIXES = {prefixes!r}

    def code(v):
        return callable(v) or isinstance(v, (property, staticmethod, classmethod))

    def snapshot():
        seen = {{}}
        for name, module in list(sys.modules.items()):
            if module is None or not name.split(".")[0] in PREFIXES:
                continue
            members = dict(vars(module))
            seen[name] = {{k: id(v) for k, v in members.items() if code(v)}}
            for cname, obj in members.items():
                if inspect.isclass(obj) and getattr(obj, "__module__", "") == name:
                    seen[f"{{name}}.{{cname}}"] = {{k: id(v) for k, v in vars(obj).items() if code(v)}}
        return seen

    before = snapshot()
    keep = list(sys.modules.values())  # the ids stay valid
    from lab.config.compose import compose
    from lab.train.fit import train
    train(compose(sys.argv[2:], sys.argv[1], drop_hydra=True))
    after = snapshot()
    changed = sorted(f"{{where}}.{{k}}" for where, members in before.items() for k, v in members.items()
                     if where in after and after[where].get(k, v) != v)
    print(json.dumps(changed))
""")


def test_a_lab_run_replaces_nothing_in_lightning_hydra_or_torch(tmp_path):
    script = SNAPSHOT_RUN.format(prefixes=THIRD_PARTY)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), *QUICK],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    changed = json.loads(result.stdout.strip().splitlines()[-1])
    # Functions, methods, classes and properties: their own counters and caches may change as they run.
    assert changed == [], changed
    assert (tmp_path / "run" / "metrics.json").is_file()


def _lab_classes():
    import lab

    plugins = [f"hydra_plugins.{p.parent.name}" for p in sorted((ROOT / "hydra_plugins").glob("*/__init__.py"))]
    names = [info.name for info in pkgutil.walk_packages(lab.__path__, "lab.")]
    for package in plugins:  # lab's Hydra plugins (sweeper, launcher) subclass Hydra's classes too
        names += [package, *(info.name for info in pkgutil.walk_packages(
            importlib.import_module(package).__path__, package + "."))]
    for name in names:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield cls


def test_no_lab_class_overrides_a_private_method_of_lightning_hydra_or_torch():
    overridden = []
    for cls in _lab_classes():
        theirs = [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] in THIRD_PARTY]
        for name in vars(cls):
            private = name.startswith("_") and not (name.startswith("__") and name.endswith("__")) \
                and name != "_abc_impl"  # set by abc for every class
            attribute_hook = name in ("__setattr__", "__getattr__", "__getattribute__", "__delattr__")
            if (private or attribute_hook) and any(name in vars(base) for base in theirs):
                overridden.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    assert overridden == [], overridden
    assert len(list(_lab_classes())) > 40  # the walk saw lab's classes


def test_the_check_itself_finds_an_override():
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Sneaky(ModelCheckpoint):
        def _save_last_checkpoint(self, trainer, monitor_candidates):  # what lab used to do
            return None

    theirs = [b for b in Sneaky.__mro__[1:] if b.__module__.split(".")[0] in THIRD_PARTY]
    assert any("_save_last_checkpoint" in vars(b) for b in theirs)


def test_the_profiler_sees_every_hook_lightning_calls(tmp_path):
    """trainer.profiler=simple: Lightning's own profiler records the task's steps, the optimizer step
    and lab's callbacks, as Lightning names them."""
    from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler

    from lab.build import build_parts, build_trainer

    cfg = compose([*QUICK, "trainer.max_epochs=1", "logger=none", "trainer.profiler=simple"], tmp_path)
    parts = build_parts(cfg)
    trainer = build_trainer(cfg)
    assert isinstance(trainer.profiler, SimpleProfiler)
    trainer.fit(parts.task, datamodule=parts.datamodule)
    actions = set(trainer.profiler.recorded_durations)
    for expected in ("[Strategy]SingleDeviceStrategy.training_step", "[Strategy]SingleDeviceStrategy.backward",
                     "[LightningModule]ClassificationTask.optimizer_step", "[Callback]ModelCheckpoint",
                     "[Callback]EpochSeeding.on_train_epoch_start", "run_training_batch"):
        assert any(a.startswith(expected) for a in actions), (expected, sorted(actions)[:40])
    default = build_trainer(compose([*QUICK, "logger=none"], tmp_path / "b"))
    assert type(default.profiler) is PassThroughProfiler  # Lightning's default, not a stand-in


@pytest.mark.parametrize("overrides, monitor, mode", [
    ([], "val/top1", "max"),
    (["experiment=mlp_function"], "val/mse", "min"),
    (["task.objective.metric=val/loss", "task.objective.mode=min"], "val/loss", "min"),
])
def test_checkpoints_are_lightnings_model_checkpoint_following_the_objective(tmp_path, overrides, monitor, mode):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lab.build import build_trainer

    trainer = build_trainer(compose([*overrides, "logger=none"], tmp_path))
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert all(type(c) is ModelCheckpoint for c in checkpoints) and len(checkpoints) == 2
    best, last = checkpoints
    assert trainer.checkpoint_callback is best
    assert (best.monitor, best.mode, best.save_top_k, best.save_last) == (monitor, mode, 1, False)
    assert (last.monitor, last.save_top_k, last._every_n_epochs, last.filename) == (None, 1, 1, "last")


def test_the_best_checkpoint_is_the_objectives_best_epoch_and_last_is_every_epoch(tmp_path):
    """val/loss (min) as the objective: the kept checkpoint is the epoch of the lowest val/loss,
    metrics.json has val/loss_best and best_epoch, and last.ckpt holds the final epoch."""
    import csv

    import torch

    from tests.conftest import run_in_process

    run = tmp_path / "run"
    metrics = run_in_process(["trainer.max_epochs=3", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                              "trainer.limit_test_batches=2", "task.objective.metric=val/loss",
                              "task.objective.mode=min", "optimizer.lr=0.05", "logger=csv"], run)
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 2 and "last.ckpt" in ckpts, ckpts
    best = next(n for n in ckpts if n != "last.ckpt")
    assert best.startswith(f"epoch{metrics['best_epoch']:03d}-val_loss="), (best, metrics)
    val_loss = {}
    for path in run.rglob("metrics.csv"):
        for row in csv.DictReader(path.open()):
            if row.get("val/loss"):
                val_loss[int(row["epoch"])] = float(row["val/loss"])
    assert len(val_loss) == 3, val_loss
    assert metrics["best_epoch"] == min(val_loss, key=val_loss.get)
    assert metrics["val/loss_best"] == pytest.approx(min(val_loss.values()), rel=1e-5)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


def _resolve(dotted: str):
    """The module or the object a dotted name imports."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _replacements(source: str) -> list[str]:
    """`<third-party name>.<path> = ...` and `setattr(<third-party name>..., ...)` in `source`
    whose target is now a function, method or class: a run-time replacement."""
    import ast

    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in THIRD_PARTY:
                    # `import a.b` binds a; `import a.b as c` binds c to a.b
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in THIRD_PARTY:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(node: ast.AST) -> list[str] | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        return [node.id, *parts] if isinstance(node, ast.Name) and node.id in aliases else None

    targets = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Attribute) and (path := dotted(t)):
                    targets.append(path)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setattr" and node.args \
                and (path := dotted(node.args[0])) and isinstance(node.args[1], ast.Constant):
            targets.append([*path, node.args[1].value])
    found = []
    for root, *attrs in targets:
        obj = _resolve(aliases[root])
        for attr in attrs[:-1]:
            obj = getattr(obj, attr, None)
        current = getattr(obj, attrs[-1], None)
        if callable(current) or isinstance(current, (property, staticmethod, classmethod)):
            found.append(".".join([aliases[root], *attrs]))
    return found


def test_no_lab_or_bench_code_assigns_to_lightning_hydra_or_torch():
    """A source check that also covers bench/ and the code a test run never reaches."""
    files = sorted([*(ROOT / "lab").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py"),
                    *(ROOT / "bench").glob("*.py")])
    found = {str(p.relative_to(ROOT)): hits for p in files if (hits := _replacements(p.read_text()))}
    assert found == {}, found
    assert len(files) > 60


def test_the_source_check_finds_a_replacement():
    assert _replacements("import lightning as L\nL.Trainer.fit = lambda *a: None\n") == ["lightning.Trainer.fit"]
    assert _replacements("from lightning.pytorch import Trainer\nsetattr(Trainer, 'fit', None)\n") \
        == ["lightning.pytorch.Trainer.fit"]
    assert _replacements("import torch\ntorch.backends.cudnn.benchmark = True\n") == []  # a setting, not code
