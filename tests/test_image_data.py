"""The image data layer on fixture datasets in the real on-disk formats."""

from __future__ import annotations

import csv
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.data.archive import safe_extract_zip
from lab.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lab.data.digits import DigitsDataModule
from lab.data.imagefolder import ImageFolderDataModule
from lab.data.safe_pickle import load_pickle
from lab.data.tinyimagenet import TinyImageNetDataModule
from lab.errors import ConfigError, DataNotFoundError
from tests.conftest import QUICK, run_cli, run_in_process
from tests.fixtures import make_cifar10, make_cifar100, make_image_folder, make_tiny_imagenet


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_imagenet(root)
    return root


# --- Tiny ImageNet ---------------------------------------------------------------------

def test_tiny_imagenet_reads_the_official_layout(tiny_root):
    dm = TinyImageNetDataModule(root=str(tiny_root), download=False, val_size=6)
    dm.setup()
    assert dm.class_names == ["goldfish", "European fire salamander", "bullfrog"]  # from words.txt
    assert dm.split_sizes() == {"train": 30, "val": 6, "test": 12}
    assert dm.in_channels == 3 and dm.image_size == (64, 64)
    assert torch.bincount(dm.splits["val"][1]).tolist() == [2, 2, 2]  # stratified hold-out of train
    # Test labels come from val_annotations.txt: the file names say nothing, the colours do.
    images, labels = dm.splits["test"]
    dominant = images.float().mean(dim=(2, 3)).argmax(dim=1)  # red, green, blue channel = class 0, 1, 2
    assert torch.equal(dominant, labels)


def test_tiny_imagenet_decodes_once_then_reads_the_cache(tiny_root, monkeypatch):
    TinyImageNetDataModule(root=str(tiny_root), download=False, val_size=6).setup()
    assert list((tiny_root / "tiny-imagenet-200" / ".lab_cache").glob("*.npz"))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr("lab.data.tinyimagenet.decode_images", refuse)
    dm = TinyImageNetDataModule(root=str(tiny_root), download=False, val_size=6)
    dm.setup()
    assert dm.split_sizes()["test"] == 12


def test_tiny_imagenet_trains_end_to_end(tiny_root, tmp_path):
    metrics = run_in_process(["data=tinyimagenet", f"data.root={tiny_root}", "data.download=false",
                              "data.val_size=6", "data.batch_size=8", "task.top_k=3", *QUICK], tmp_path)
    assert 0.0 <= metrics["test/top1"] <= 1.0
    assert (tmp_path / "confusion_test.csv").read_text().splitlines()[0].endswith("bullfrog")


def test_tiny_imagenet_missing_gives_one_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        TinyImageNetDataModule(root=str(tmp_path), download=False).setup()
    message = str(info.value)
    assert str(tmp_path) in message and "val_annotations.txt" in message and "tiny-imagenet-200.zip" in message


def test_tiny_imagenet_bad_annotation_line_names_the_line(tmp_path):
    top = make_tiny_imagenet(tmp_path, per_class=3, val_per_class=1)
    with open(top / "val" / "val_annotations.txt", "a") as f:
        f.write("val_x.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(DataNotFoundError, match=r"val_annotations.txt:4"):
        TinyImageNetDataModule(root=str(tmp_path), download=False, val_size=3).setup()


# --- CIFAR ------------------------------------------------------------------------------

def test_cifar10_pickles(tmp_path):
    make_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=20)
    dm.setup()
    assert dm.split_sizes() == {"train": 180, "val": 20, "test": 40}
    assert dm.class_names[9] == "truck" and dm.image_size == (32, 32) and dm.in_channels == 3
    raw = load_pickle(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert torch.equal(dm.splits["test"][0][0], torch.from_numpy(raw["data"][0].reshape(3, 32, 32)))


@pytest.mark.parametrize("label_type,classes,first", [("fine", 100, "fine0"), ("coarse", 20, "coarse0")])
def test_cifar100_fine_and_coarse(tmp_path, label_type, classes, first):
    make_cifar100(tmp_path)
    dm = CIFAR100DataModule(root=str(tmp_path), download=False, val_size=100, label_type=label_type)
    dm.setup()
    assert dm.num_classes == classes and dm.class_names[0] == first
    assert int(dm.splits["test"][1].max()) == classes - 1


def test_cifar100_rejects_unknown_label_type():
    with pytest.raises(ConfigError, match="label_type"):
        CIFAR100DataModule(label_type="medium")


def test_safe_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("true",))

    (tmp_path / "evil").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_pickle(tmp_path / "evil")


def test_cifar10_trains_end_to_end_on_both_paths(tmp_path):
    make_cifar10(tmp_path / "data")
    for fast in ("true", "false"):
        out = tmp_path / f"run_{fast}"
        metrics = run_in_process(["data=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false",
                                  "data.val_size=20", "data.batch_size=16", f"data.fast_path={fast}",
                                  "data.num_workers=0", *QUICK], out)
        assert 0.0 <= metrics["test/top1"] <= 1.0


# --- image folders ------------------------------------------------------------------------

def test_image_folder_splits_resize_and_merge(tmp_path):
    make_image_folder(tmp_path)
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=32)
    dm.setup()
    assert dm.class_names == ["cat", "dog", "owl"]
    assert dm.split_sizes() == {"train": 18, "val": 18, "test": 18}
    assert dm.image_size == (32, 32)
    merged = ImageFolderDataModule(root=str(tmp_path), image_size=32, extra_train_splits=["addition"])
    merged.setup()
    assert merged.split_sizes()["train"] == 36


def test_image_folder_class_subset_by_name_and_index(tmp_path):
    make_image_folder(tmp_path)
    by_name = ImageFolderDataModule(root=str(tmp_path), image_size=16, classes=["owl", "cat"])
    by_name.setup()
    assert by_name.class_names == ["owl", "cat"] and by_name.split_sizes()["train"] == 12
    by_index = ImageFolderDataModule(root=str(tmp_path), image_size=16, classes=[1])
    by_index.setup()
    assert by_index.class_names == ["dog"]
    with pytest.raises(ConfigError, match="unknown class 'bat'"):
        ImageFolderDataModule(root=str(tmp_path), image_size=16, classes=["bat"]).setup()


def test_image_folder_bad_inputs(tmp_path):
    make_image_folder(tmp_path)
    (tmp_path / "test" / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataNotFoundError, match=r"test/dog/broken.jpg: cannot decode image"):
        ImageFolderDataModule(root=str(tmp_path), image_size=16).setup()
    skipping = ImageFolderDataModule(root=str(tmp_path), image_size=16, skip_bad_images=True)
    skipping.setup()
    assert skipping.split_sizes()["test"] == 18
    (tmp_path / "val" / "fox").mkdir()
    with pytest.raises(DataNotFoundError, match=r"classes differ from train/ \(missing: none; extra: \['fox'\]\)"):
        ImageFolderDataModule(root=str(tmp_path), image_size=16, skip_bad_images=True).setup()
    for split in ("train", "test"):
        (tmp_path / split / "fox").mkdir()
    with pytest.raises(DataNotFoundError, match=r"fox: class folder has no images"):
        ImageFolderDataModule(root=str(tmp_path), image_size=16, skip_bad_images=True).setup()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere")).setup()


def test_image_folder_needs_a_size_when_images_differ(tmp_path):
    make_image_folder(tmp_path, splits=("train", "val", "test"))
    with pytest.raises(DataNotFoundError, match="data.image_size"):
        ImageFolderDataModule(root=str(tmp_path), image_size=None).setup()


# --- label noise ---------------------------------------------------------------------------

def test_symmetric_noise_changes_exactly_the_ratio(tmp_path):
    clean = DigitsDataModule()
    clean.setup()
    noisy = DigitsDataModule(noise_ratio=0.3, seed=5)
    noisy.setup()
    n = len(clean.splits["train"][1])
    changed = noisy.splits["train"][1] != clean.splits["train"][1]
    assert int(changed.sum()) == round(0.3 * n)
    for split in ("val", "test"):
        assert torch.equal(noisy.splits[split][1], clean.splits[split][1])
        assert torch.equal(noisy.splits[split][0], clean.splits[split][0])
    again = DigitsDataModule(noise_ratio=0.3, seed=5)
    again.setup()
    assert torch.equal(again.splits["train"][1], noisy.splits["train"][1])
    other = DigitsDataModule(noise_ratio=0.3, seed=6)
    other.setup()
    assert not torch.equal(other.splits["train"][1], noisy.splits["train"][1])
    noisy.save_artifacts(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "label_noise.csv")))
    assert len(rows) == round(0.3 * n)
    for row in rows:
        i = int(row["train_index"])
        assert int(row["original"]) == int(clean.splits["train"][1][i]) != int(row["noisy"])


def test_asymmetric_noise_on_cifar10_follows_the_mapping(tmp_path):
    make_cifar10(tmp_path, per_batch=200)
    clean = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=100)
    clean.setup()
    noisy = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=100, noise_ratio=0.4,
                              noise_type="asymmetric")
    noisy.setup()
    before, after = clean.splits["train"][1], noisy.splits["train"][1]
    names = clean.class_names
    expected = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
    for i in (after != before).nonzero().flatten().tolist():
        assert names[int(after[i])] == expected[names[int(before[i])]]
    for source in expected:
        members = int((before == names.index(source)).sum())
        moved = int(((before == names.index(source)) & (after != before)).sum())
        assert moved == round(0.4 * members)


def test_noise_bad_values():
    with pytest.raises(ConfigError, match=r"noise_ratio must be in \[0, 1\), got 1.5"):
        DigitsDataModule(noise_ratio=1.5)
    dm = DigitsDataModule(noise_ratio=0.2, noise_type="asymmetric")
    with pytest.raises(ConfigError, match="noise_mapping"):
        dm.setup()


def test_noise_through_the_cli_writes_label_noise_csv(tmp_path):
    metrics = run_in_process(["data.noise_ratio=0.3", *QUICK], tmp_path)
    assert metrics["test/top1"] >= 0
    rows = (tmp_path / "label_noise.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == round(0.3 * 1257)


def test_bad_noise_ratio_stops_before_any_write(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["data.noise_ratio=1.5", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "data.noise_ratio must be in [0, 1), got 1.5" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    written = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
    assert set(written) <= {".hydra", "run.log", "error.json"}, written  # only the record of the attempt


# --- archives ------------------------------------------------------------------------------

def test_zip_extraction_refuses_escaping_members(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "n1\n")
        zf.writestr("../escaped.txt", "gotcha")
    (tmp_path / "evil.zip").write_bytes(buffer.getvalue())
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(DataNotFoundError, match="outside"):
        safe_extract_zip(tmp_path / "evil.zip", target)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (target / "tiny-imagenet-200").exists()  # nothing written at all


def test_zip_extraction_of_a_clean_archive(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a/b.txt", "ok")
    (tmp_path / "ok.zip").write_bytes(buffer.getvalue())
    safe_extract_zip(tmp_path / "ok.zip", tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b.txt").read_text() == "ok"


def test_fixture_arrays_are_uint8(tmp_path):
    make_cifar10(tmp_path)
    raw = load_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1")
    assert raw["data"].dtype == np.uint8
