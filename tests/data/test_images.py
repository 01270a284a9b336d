import gzip
import shutil

import pytest
import torch

from robustbench_geo.data import DataMissingError, load_dataset
from robustbench_geo.data.root import ChecksumError, is_writable


def test_mnist_from_readonly_mirror(mnist_root, mnist_test):
    assert mnist_test.images.shape == (10000, 1, 28, 28)
    assert mnist_test.images.dtype == torch.float32
    assert 0.0 <= mnist_test.images.min() and mnist_test.images.max() <= 1.0
    assert mnist_test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    if not is_writable(mnist_root):  # the mirror is read-only: nothing may have been written there
        assert sorted(p.name for p in (mnist_root / "MNIST").iterdir()) == ["raw"]


def test_subset_is_seeded(mnist_test):
    a, b, c = mnist_test.subset(50, seed=1), mnist_test.subset(50, seed=1), mnist_test.subset(50, seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.meta["subset"] == 50


def test_scaled_mnist_is_deterministic_and_in_range(mnist_root):
    a = load_dataset("mnist-scaled", split="test", root=mnist_root, seed=3, subset=200)
    b = load_dataset("mnist-scaled", split="test", root=mnist_root, seed=3, subset=200)
    assert torch.equal(a.images, b.images)
    p = a.meta["params"]
    # Keras zoom in [1, 2.5] -> content scale in [0.4, 1]; shifts up to 20 % of 28 px
    for s in (p["scale_x"], p["scale_y"]):
        assert s.min() >= 0.4 - 1e-6 and s.max() <= 1.0 + 1e-6
    assert p["tx_px"].abs().max() <= 0.2 * 28 + 1e-6 and p["ty_px"].abs().max() <= 0.2 * 28 + 1e-6
    assert a.meta["transform"]["keras_zoom"] == [1.0, 2.5]
    # digits shrink: less ink on average than the originals
    base = load_dataset("mnist", split="test", root=mnist_root, subset=200, seed=3)
    assert a.images.sum() < 0.9 * base.images.sum()


def test_rotated_mnist_records_range(mnist_root):
    r = load_dataset("mnist-rotated:max_angle_deg=30", split="test", root=mnist_root, subset=100)
    assert r.meta["params"]["angle_deg"].abs().max() <= 30
    assert r.meta["transform"]["angle_deg"] == [-30.0, 30.0]


def test_missing_data_offline_names_files(tmp_path):
    with pytest.raises(DataMissingError, match=r"MNIST/raw/train-images-idx3-ubyte\.gz"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_checksum_mismatch_is_an_error(tmp_path, mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist_root / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not mnist")
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", split="test", root=tmp_path, download=False)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(KeyError, match="Did you mean 'mnist'.*Valid datasets:.*mnist-scaled"):
        load_dataset("mnsit")


def test_bad_split():
    with pytest.raises(ValueError, match="expected 'train' or 'test'"):
        load_dataset("mnist", split="val")


def test_scaled_mnist_nearest_resamples_the_same_draws_as_keras_did(mnist_root):
    """``interpolation=nearest`` keeps the seed's transforms and resamples as Keras 2.0's generator
    (nearest neighbour, edges repeated): every pixel is read from the source pixel that an independent
    inverse mapping of the recorded matrix lands nearest to."""
    from robustbench_geo.geometry import AffineParams

    kw = dict(split="test", root=mnist_root, seed=3, subset=64)
    near = load_dataset("mnist-scaled:interpolation=nearest", **kw)
    bil = load_dataset("mnist-scaled", **kw)
    base = load_dataset("mnist", split="test", root=mnist_root, seed=3, subset=64)
    for k, v in near.meta["params"].items():
        assert torch.equal(v, bil.meta["params"][k]), k
    assert near.meta["transform"]["mode"] == "nearest" and near.meta["transform"]["padding_mode"] == "border"

    m = AffineParams(**near.meta["params"]).matrix((28, 28)).double()  # source pixel -> output pixel
    inv = torch.linalg.inv(m)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten(), torch.ones(784)]).double()
    src = inv @ grid  # (n, 3, 784): where each output pixel reads from
    sx = src[:, 0].round().clamp(0, 27).long()
    sy = src[:, 1].round().clamp(0, 27).long()
    expected = torch.stack([base.images[i, 0][sy[i], sx[i]] for i in range(len(base))]).view(-1, 1, 28, 28)
    ink = (expected > 0) | (near.images > 0) | (bil.images > 0)
    # the rest: source coordinates within float rounding of a half pixel
    assert (near.images == expected)[ink].float().mean() > 0.98
    assert (bil.images == expected)[ink].float().mean() < 0.5  # bilinear averages neighbours instead


def test_scaled_mnist_unknown_interpolation_lists_the_valid_ones(mnist_root):
    with pytest.raises(KeyError, match="bilinear, nearest"):
        load_dataset("mnist-scaled:interpolation=cubic", split="test", root=mnist_root, subset=8)


def test_a_subset_keeps_the_transform_of_each_of_its_samples(mnist_root):
    full = load_dataset("mnist-scaled", split="test", root=mnist_root, seed=3)
    part = load_dataset("mnist-scaled", split="test", root=mnist_root, seed=3, subset=50)
    rows = [int((full.images == img).flatten(1).all(1).nonzero()[0]) for img in part.images]
    for k, v in part.meta["params"].items():
        assert v.shape == (50,) and torch.equal(v, full.meta["params"][k][rows]), k
