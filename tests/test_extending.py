"""docs/extending.md's worked examples, run from the page itself (not from copies).

Each fenced block that starts with `# file: <path>` is written where the page says: lab/**
modules into a temporary folder put in front of their package's __path__ (so
`lab.data.npz` imports from there), conf/** into a temporary copy of conf/ that lab's
compose reads, tests/** into a temporary module. The torchvision block is the page's
ARCHITECTURES entries, added to the real dict. The commands of each section's bash block
(`python -m lab.run ...`) are run in-process with a few batches on the CPU appended.
Breaking an example on the page fails the test that runs it.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_in_process

DOC = ROOT / "docs" / "extending.md"
ENTRIES = "lab/models/architectures.py"  # its block is entries of ARCHITECTURES, not a whole module
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
CPU = ["trainer.accelerator=cpu", "trainer.devices=1"]


def sections() -> dict[str, str]:
    """The page's `## ` sections by their number ("1", "2", "3"), the others by heading."""
    parts = re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]
    return {part.split(".", 1)[0] if part[:1].isdigit() else part.split("\n", 1)[0]: part for part in parts}


def file_blocks(text: str) -> dict[str, str]:
    """The fenced blocks of `text` whose first line is `# file: <path> [note]`, by path."""
    blocks = {}
    for _, body in FENCE.findall(text):
        match = re.match(r"#\s*file:\s*(\S+)", body)
        if match:
            assert match.group(1) not in blocks, f"two blocks for {match.group(1)} in {DOC}"
            blocks[match.group(1)] = body
    return blocks


def commands(section: str) -> list[list[str]]:
    """The overrides of each `python -m lab.run ...` line in the section's bash blocks."""
    found = []
    for lang, body in FENCE.findall(section):
        for line in body.splitlines() if lang == "bash" else ():
            line = line.split(" && ", 1)[0]
            if line.startswith("python -m lab.run "):
                found.append(shlex.split(line[len("python -m lab.run "):], comments=True))
    assert found, "no `python -m lab.run` command in the section"
    return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The page's files in a temporary tree that lab's imports and config composition read."""
    from lab.config import paths

    blocks = file_blocks(DOC.read_text())
    top = tmp_path_factory.mktemp("extending")
    shutil.copytree(paths.config_dir(), top / "conf")
    packages, modules = {}, []
    for rel, text in blocks.items():
        if rel == ENTRIES:
            continue
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
        if rel.startswith("lab/"):
            package = ".".join(Path(rel).parent.parts)
            packages[package] = str(top / Path(rel).parent)
            modules.append(f"{package}.{Path(rel).stem}")
    import torch

    threads = torch.get_num_threads()
    # Tiny fits: one thread. On the 2 shared cores, two OpenMP threads that wait for each other
    # make a MobileNet step 10-100x slower whenever another process is busy.
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "config_dir", lambda: str(top / "conf"))
        for name, folder in packages.items():
            package = importlib.import_module(name)
            mp.setattr(package, "__path__", [folder, *package.__path__])
        yield {"root": top, "blocks": blocks}
    torch.set_num_threads(threads)
    for name in modules:
        sys.modules.pop(name, None)


def quick(epochs: int = 2) -> list[str]:
    return [*CPU, f"trainer.max_epochs={epochs}", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=1", "trainer.enable_model_summary=false"]


def test_the_page_marks_every_example_with_its_file():
    blocks = file_blocks(DOC.read_text())
    assert {"lab/data/npz.py", "conf/data/npz.yaml", "tests/test_npz_data.py", "lab/models/architectures.py",
            "lab/tasks/balanced.py", "conf/task/balanced.yaml"} <= set(blocks)
    for rel, text in blocks.items():
        if rel.endswith(".py") and rel != ENTRIES:
            compile(text, rel, "exec")  # each module is whole, not an excerpt


# --- 1. a new dataset ---------------------------------------------------------------------


def test_new_dataset_trains_with_its_fixture(tree, tmp_path):
    """The page's test module: its fixture writes the real on-disk files, its test fits on them."""
    import torch

    spec = importlib.util.spec_from_file_location("tests._doc_test_npz_data", tree["root"] / "tests/test_npz_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "npz_root"), "the page's test module has no npz_root fixture"
    root = module.make_npz(tmp_path / "npz")
    assert {p.name for p in root.iterdir()} == {"train.npz", "test.npz", "classes.txt"}

    runs = []

    def recorded(overrides, output_dir):
        runs.append((overrides, Path(output_dir), run_in_process(overrides, output_dir)))
        return runs[-1][2]

    module.run_in_process = recorded
    module.test_npz_trains_and_reports_test_top1(root, tmp_path)  # the page's own assertion
    (overrides, run_dir, metrics), = runs
    assert "data=npz" in overrides
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test/top1"] == pytest.approx(metrics["test/top1"]) and "val/top1_best" in saved

    from lab.data.npz import NpzDataModule  # the page's module, from the temporary tree

    data = NpzDataModule(root=str(root), seed=0)
    data.setup("fit")
    assert data.class_names == ["dark", "grey", "light"] and data.model_inputs()["in_channels"] == 1
    assert sum(data.split_sizes().values()) == 3 * 40 + 3 * 10
    # colour arrays [N, H, W, 3] become [N, 3, H, W], each pixel's channels kept together
    colour = tmp_path / "colour"
    colour.mkdir()
    rgb = np.random.default_rng(1).integers(0, 256, (20, 5, 7, 3), dtype=np.uint8)
    for split in ("train", "test"):
        np.savez(colour / f"{split}.npz", images=rgb, labels=np.arange(20) % 2)
    (colour / "classes.txt").write_text("a\nb\n")
    data = NpzDataModule(root=str(colour), seed=0, val_fraction=0.5)
    data.setup("fit")
    assert data.model_inputs() == {"in_channels": 3, "num_classes": 2, "image_size": [5, 7]}
    images = data.splits["test"][0]
    assert images.dtype == torch.uint8 and torch.equal(images[3, :, 4, 6], torch.from_numpy(rgb[3, 4, 6]))


# --- 2. a new torchvision architecture ------------------------------------------------------


def test_new_torchvision_entries_build_meet_the_contract_and_train(tree, tmp_path, monkeypatch):
    import torch
    import torchvision

    from lab.models import torchvision_models as tv
    from lab.models.contract import check_model, final_linear

    entries = eval("{" + tree["blocks"][ENTRIES] + "}", {"Arch": tv.Arch})
    assert entries and all(isinstance(e, tv.Arch) for e in entries.values())
    for name, entry in entries.items():
        assert name not in tv.ARCHITECTURES, f"{name} is already in ARCHITECTURES: the page must add a new one"
        monkeypatch.setitem(tv.ARCHITECTURES, name, entry)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    sizes = {}
    for name in entries:
        model = tv.TorchvisionClassifier(1, 10, (32, 32), arch=name)
        sizes[name] = sum(p.numel() for p in model.parameters())
        check_model(model, {"in_channels": 1, "num_classes": 10, "image_size": [32, 32]}, name)
        x = torch.randn(2, 1, 32, 32)
        model.eval()
        assert model(x).shape == (2, 10) and model.features(x).shape == (2, model.feature_dim)
        assert final_linear(model)[1].in_features == model.feature_dim
    for name, entry in entries.items():  # the weights enum torchvision pairs with the builder
        assert torchvision.models.get_model_weights(entry.builder or name) is getattr(torchvision.models, entry.weights)
    # pretrained=true reads the entry's weights enum: its IMAGENET1K_V1 file, here from the cache.
    small = min(sizes, key=sizes.get)
    url = getattr(torchvision.models, entries[small].weights).IMAGENET1K_V1.url
    reference = getattr(torchvision.models, entries[small].builder or small)(weights=None)
    tv.weights_cache_dir().mkdir(parents=True)
    torch.save(reference.state_dict(), tv.weights_cache_dir() / Path(url).name)
    loaded = tv.TorchvisionClassifier(3, 10, arch=small, pretrained=True)
    first = next(k for k in reference.state_dict() if k.endswith("weight"))
    assert torch.equal(loaded.net.state_dict()[first], reference.state_dict()[first])

    run_dir = tmp_path / "run"
    overrides = [*commands(sections()["2"])[0], *quick(1), "logger=none", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "data.batch_size=16", "data.eval_batch_size=32"]
    metrics = run_in_process(overrides, run_dir)
    assert 0.0 <= metrics["test/top1"] <= 1.0 and metrics["epochs"] == 1
    saved = (run_dir / "config.yaml").read_text()
    assert f"arch: {next(iter(entries))}" in saved and "TorchvisionClassifier" in saved


# --- 3. a new task with its own objective -----------------------------------------------------


def per_epoch(run_dir: Path, key: str) -> dict[int, float]:
    """`key` at each validation epoch, from the CSV logger's metrics.csv."""
    with open(run_dir / "metrics.csv") as f:
        return {int(row["epoch"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


def kept_checkpoint(run_dir: Path) -> Path:
    kept = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(kept) == 1, kept
    return kept[0]


def test_new_task_keeps_the_checkpoint_of_its_objective(tree, tmp_path):
    import torch

    run_dir = tmp_path / "run"
    overrides = [*commands(sections()["3"])[0], *quick(4), "logger=csv"]
    metrics = run_in_process(overrides, run_dir)
    losses = per_epoch(run_dir, "val/loss")
    assert sorted(losses) == [0, 1, 2, 3]
    lowest = min(losses, key=losses.get)  # the first of equal values, as the checkpoint keeps it
    kept = kept_checkpoint(run_dir)
    assert kept.name.startswith(f"epoch{lowest:03d}-val_loss="), (kept, losses)
    assert torch.load(kept, map_location="cpu", weights_only=True)["epoch"] == lowest
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["val/loss_best"] == pytest.approx(losses[lowest], rel=1e-5)
    assert saved["best_epoch"] == lowest and "val/top1_best" not in saved
    assert 0.0 <= saved["test/balanced_top1"] <= 1.0 and 0.0 <= saved["val/balanced_top1"] <= 1.0
    assert metrics["test/top1"] == pytest.approx(saved["test/top1"])


def test_new_task_ranks_by_its_new_metric_from_the_command_line(tree, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*commands(sections()["3"])[1], *quick(3), "logger=csv"]
    assert "task.objective.metric=val/balanced_top1" in overrides
    run_in_process(overrides, run_dir)
    scores = per_epoch(run_dir, "val/balanced_top1")
    highest = max(scores, key=scores.get)
    assert kept_checkpoint(run_dir).name.startswith(f"epoch{highest:03d}-val_balanced_top1="), scores
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["val/balanced_top1_best"] == pytest.approx(scores[highest], rel=1e-5)
    assert saved["best_epoch"] == highest and "val/loss_best" not in saved
