"""Every random stream has its own seed: no two coincide, within a run or across seeds, and
the label noise is spread over the first batches instead of filling them."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pytest
import torch

from lab.data.loader import shard_order
from lab.utils.seeds import PURPOSES, generator, stream_seed
from tests.conftest import ROOT
from tests.test_data import make_fake_mnist

SEEDS = range(6)
EPOCHS = (None, *range(6))
RANKS = (0, 1, 2)
# Streams with parts: the test and val hold-outs drawn from one split seed.
STREAMS = [p for p in PURPOSES if p != "split"] + ["split/val", "split/test"]


@pytest.mark.parametrize("bits", [63, 32])
def test_no_two_streams_share_a_seed_within_a_run_or_across_seeds(bits):
    """Every pair of (seed, stream, epoch, rank) gets a different generator seed."""
    seen: dict[int, tuple] = {}
    for key in itertools.product(SEEDS, STREAMS, EPOCHS, RANKS):
        value = stream_seed(*key, bits=bits)
        assert 0 <= value < 2 ** bits
        assert value not in seen, f"{key} and {seen[value]} share the seed {value}"
        seen[value] = key
    assert len(seen) == len(SEEDS) * len(STREAMS) * len(EPOCHS) * len(RANKS)
    # The bare seed itself is no stream's seed (the old epoch-0 streams all used it).
    assert not set(SEEDS) & set(seen)


def test_streams_are_stable_and_unknown_ones_refused():
    assert stream_seed(42, "shuffle", 3) == stream_seed(42, "shuffle", 3)
    assert torch.equal(torch.rand(4, generator=generator(7, "noise")), torch.rand(4, generator=generator(7, "noise")))
    with pytest.raises(ValueError, match="unknown random stream 'labels'"):
        stream_seed(0, "labels")


def test_batch_orders_do_not_repeat_across_seeds_shifted_by_an_epoch():
    """seed + epoch used to make seed 1's epoch 0 equal seed 0's epoch 1."""
    assert not torch.equal(shard_order(500, True, seed=1, epoch=0), shard_order(500, True, seed=0, epoch=1))
    orders = {tuple(shard_order(200, True, s, e).tolist()) for s in range(4) for e in range(4)}
    assert len(orders) == 16


def _noisy_share_of_first_batches(tmp_path: Path, seed: int, ratio: float, batches: int) -> tuple[float, int]:
    from lab.data.mnist import FashionMNISTDataModule

    make_fake_mnist(tmp_path / "fashion", n_train=3000, n_test=100)
    dm = FashionMNISTDataModule(root=str(tmp_path / "fashion"), download=False, seed=seed, batch_size=50,
                                val_size=500, noise_ratio=ratio, num_workers=0)
    dm.setup("fit")
    images, noisy = dm.splits["train"]
    clean = dm.clean_train_labels
    assert float((noisy != clean).float().mean()) == pytest.approx(ratio, abs=1e-3)
    # which sample each training image is: its pixels (the fake images are random, hence unique)
    index = {bytes(img.numpy()): i for i, img in enumerate(images)}
    seen = changed = 0
    for b, (x, y) in enumerate(dm.train_dataloader()):
        if b == batches:
            break
        for img, label in zip(x, y):
            i = index[bytes(img.numpy())]
            assert int(label) == int(noisy[i])
            changed += int(noisy[i] != clean[i])
            seen += 1
    return changed / seen, seen


@pytest.mark.parametrize("seed", [0, 42])
def test_the_first_batches_of_epoch_0_hold_the_noise_ratio(tmp_path, seed):
    """The label-noise study's collapse: the noisy samples were chosen by the same permutation
    as epoch 0's order, so the first ratio x N samples were all mislabelled (share 1.0)."""
    ratio = 0.1
    share, n = _noisy_share_of_first_batches(tmp_path, seed, ratio, batches=10)
    sigma = math.sqrt(ratio * (1 - ratio) / n)
    assert abs(share - ratio) < 4 * sigma, f"noisy share {share:.3f} of the first {n} samples, ratio {ratio}"


# --- every stream in lab's code goes through lab.utils.seeds ------------------------------
SEEDING_CALLS = {"manual_seed", "seed_everything", "seed", "default_rng", "RandomState"}
DERIVING = {"stream_seed", "epoch_seed", "epoch_stream_seed"}  # lab.utils.seeds and its two wrappers


def _derives(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) in DERIVING
               for n in ast.walk(node))


def _unseeded_calls(source: str, where: str) -> list[str]:
    """Calls in `source` that seed a generator with something other than a stream's seed: a
    `stream_seed(...)` call, or a name or attribute assigned from one in the same file."""
    tree = ast.parse(source)
    derived = {getattr(t, "id", getattr(t, "attr", None)) for n in ast.walk(tree)
               if isinstance(n, ast.Assign) and _derives(n.value) for t in n.targets}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        values = [*node.args] if name in SEEDING_CALLS else []
        values += [k.value for k in node.keywords if k.arg in ("random_state", "seed") and name not in
                   {"BatchTransform", "ShardSampler", "TensorBatchLoader", "ClassBalancedBatchSampler",
                    "FeaturePictures", "EpochSeeding", "stratified_split", "apply_noise", "instantiate"}]
        for value in values:
            if not (_derives(value) or getattr(value, "id", getattr(value, "attr", None)) in derived):
                found.append(f"{where}:{node.lineno} {ast.unparse(node)[:80]}")
    return found


def test_lab_seeds_every_generator_through_its_stream():
    files = {p.relative_to(ROOT).as_posix(): p for p in (ROOT / "lab").rglob("*.py")}
    found = [hit for name, p in files.items() if name != "lab/utils/seeds.py"
             for hit in _unseeded_calls(p.read_text(), name)]
    assert found == [], found
    assert len(files) > 60


def test_the_stream_check_finds_a_bare_seed():
    assert _unseeded_calls("import torch\ng = torch.Generator().manual_seed(seed + epoch)\n", "x.py")
    assert _unseeded_calls("from sklearn.decomposition import PCA\nPCA(2, random_state=seed)\n", "x.py")
    assert not _unseeded_calls("torch.manual_seed(stream_seed(seed, 'weights', bits=32))\n", "x.py")
    assert not _unseeded_calls("s = epoch_seed(seed, epoch)\nrandom.seed(s)\n", "x.py")
