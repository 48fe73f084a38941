"""One seed per random stream, derived by hashing (seed, purpose[, epoch][, rank]).

Two streams must never share a generator seed. When the label noise and epoch 0's shuffle
both drew `torch.randperm(n)` from the bare run seed, every mislabelled sample came first
and the network collapsed before it saw a clean label. Adding numbers is no better:
seed + epoch makes seed 1's epoch 0 replay seed 0's epoch 1.

Every stream in lab asks `stream_seed` for its seed, naming its purpose from `PURPOSES`
(an unknown purpose is refused, so a new stream is added here, where the test that every
pair of streams differs will see it). numpy's SeedSequence hashes the whole tuple, so
nearby seeds, epochs and purposes give unrelated seeds.
"""

from __future__ import annotations

import zlib

import numpy as np

# Every random stream of a run. "split" draws the train/val/test split from data.split_seed;
# "function_*" draw function-fitting samples from data.sample_seed; the rest start from the
# run's seed.
PURPOSES = (
    "split",               # stratified train/val(/test) split (per part: split/val, split/test)
    "noise",               # which labels data.noise_ratio corrupts, and to what
    "shuffle",             # the training batch order of an epoch
    "augmentation",        # crops, flips and cutout of an epoch, per DDP process
    "balanced_sampler",    # the class-balanced batches of an epoch (metric learning)
    "weights",             # the model's initial weights
    "dropout",             # torch's global generator during a training epoch (dropout, ...), per process
    "workers",             # DataLoader worker processes' base seed
    "feature_pictures",    # which samples the PCA / t-SNE pictures show, and their projection
    "function_train",      # function fitting: the train, val and test points, and the train
    "function_val",        # targets' noise (from data.sample_seed)
    "function_test",
    "function_noise",
)
_CODES = {name: zlib.crc32(name.encode()) for name in PURPOSES}  # stable across runs and machines
_MASK64 = (1 << 64) - 1


def stream_seed(seed: int, purpose: str, epoch: int | None = None, rank: int = 0, bits: int = 63) -> int:
    """The seed of stream `purpose` for the run seed `seed` (and `epoch` and DDP `rank` where the
    stream restarts per epoch and differs per process), as a non-negative `bits`-bit integer:
    63 for torch generators, 32 for numpy's legacy RandomState and scikit-learn."""
    base, _, part = purpose.partition("/")
    if base not in _CODES:
        raise ValueError(f"unknown random stream {purpose!r}: add it to lab.utils.seeds.PURPOSES")
    key = [_CODES[base], zlib.crc32(part.encode()), 0 if epoch is None else 1, int(epoch or 0), int(rank)]
    sequence = np.random.SeedSequence(entropy=int(seed) & _MASK64, spawn_key=key)
    value = int(sequence.generate_state(1, dtype=np.uint64)[0])
    return value >> (64 - bits)


def generator(seed: int, purpose: str, epoch: int | None = None, rank: int = 0, device=None):
    """A torch.Generator (on `device`) seeded for stream `purpose`."""
    import torch

    return torch.Generator(device=device or "cpu").manual_seed(stream_seed(seed, purpose, epoch, rank))
