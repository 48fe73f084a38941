"""The confusion matrix's per-batch count: the same matrix as sklearn (and as the bincount it
replaced), with nothing read back to the host on any batch (bincount sized its output from the
largest value: a device-to-host sync on every val/test batch on CUDA)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lab.callbacks.confusion import ConfusionMatrixLogger, count_pairs


def _trainer() -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, world_size=1, current_epoch=0, is_global_zero=True, loggers=[])


def _batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random (target, preds) batches; some draw from a few classes only, so most classes are
    absent from them, and the last class never occurs at all."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for size, classes in [(64, n - 1), (1, n - 1), (40, 2), (33, 3), (128, n - 1)]:
        classes = min(classes, n - 1)
        target = torch.randint(0, classes, (size,), generator=gen)
        preds = torch.randint(0, classes, (size,), generator=gen)
        batches.append((target, preds))
    return batches


@pytest.mark.parametrize("n, dtype", [(7, torch.long), (30, torch.uint8), (2, torch.int32)])
def test_counts_are_sklearns_confusion_matrix(n, dtype):
    """uint8 labels with 30 classes: target * n overflows uint8 (29 * 30 = 870) unless widened first."""
    from sklearn.metrics import confusion_matrix

    callback, module = ConfusionMatrixLogger(save_png=False), SimpleNamespace(num_classes=n)
    batches = _batches(n, seed=n)
    for i, (target, preds) in enumerate(batches):
        outputs = {"target": target.to(dtype), "preds": preds}
        callback.on_validation_batch_end(_trainer(), module, outputs, None, i)
    callback.on_validation_epoch_end(_trainer(), module)
    target, preds = (torch.cat(parts) for parts in zip(*batches))
    expected = confusion_matrix(target.numpy(), preds.numpy(), labels=list(range(n)))
    assert callback.last["val"].shape == (n, n) and callback.last["val"].dtype == np.int64
    assert np.array_equal(callback.last["val"], expected)
    assert not expected[-1].any() and not expected[:, -1].any()  # a class absent from every batch: zeros
    bincount = torch.bincount(target * n + preds, minlength=n * n).view(n, n)  # what lab counted before
    assert np.array_equal(callback.last["val"], bincount.numpy())


def _bincount_update(counts: torch.Tensor, target: torch.Tensor, preds: torch.Tensor, n: int) -> torch.Tensor:
    """The update this callback used to make."""
    counts += torch.bincount(target * n + preds, minlength=n * n)
    return counts


def test_the_per_batch_update_never_reads_a_value_back():
    """No graph break under torch.compile's tracer, and it runs on meta tensors, which hold no values.
    torch 2.14's fullgraph=True does not reveal a sync: it captures .item(), masks and bincount as
    data-dependent sizes (capture_scalar_outputs is on under fullgraph), so the breaks are read from
    torch._dynamo.explain without it. The old bincount update fails both checks."""
    import torch._dynamo

    n = 10
    target, preds = torch.randint(0, n, (50,)), torch.randint(0, n, (50,))

    def breaks(update) -> list[str]:
        torch._dynamo.reset()
        found = torch._dynamo.explain(update)(torch.zeros(n * n, dtype=torch.long), target, preds, n)
        assert found.graph_count >= 1  # it was traced
        return [reason.reason.splitlines()[0] for reason in found.break_reasons]

    assert breaks(count_pairs) == []
    assert breaks(_bincount_update) == ["Dynamic shape operator"]  # aten.bincount: its size depends on the data
    compiled = torch.compile(count_pairs, fullgraph=True, backend="eager")
    counts = compiled(torch.zeros(n * n, dtype=torch.long), target, preds, n)
    assert torch.equal(counts, torch.bincount(target * n + preds, minlength=n * n))

    callback, module = ConfusionMatrixLogger(save_png=False), SimpleNamespace(num_classes=n)
    meta = {"target": target.to("meta"), "preds": preds.to("meta")}
    for i in range(3):  # the first batch allocates the counts, the others add to them
        callback.on_validation_batch_end(_trainer(), module, meta, None, i)
        callback.on_test_batch_end(_trainer(), module, meta, None, i)
    assert all(c.device.type == "meta" and c.shape == (n * n,) for c in callback._counts.values())
    with pytest.raises(NotImplementedError, match="bincount"):
        _bincount_update(torch.zeros(n * n, dtype=torch.long, device="meta"), meta["target"], meta["preds"], n)
