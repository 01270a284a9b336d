"""mnist-cluttered: seeded and deterministic, parameters recorded and consistent with the images."""

import pytest
import torch

from robustbench_geo.data.cluttered import clutter_images


@pytest.fixture(scope="module")
def digits(mnist_test):
    return mnist_test.images[:300]


def test_deterministic_by_seed(digits):
    a, pa = clutter_images(digits, seed=3)
    b, pb = clutter_images(digits, seed=3)
    c, _ = clutter_images(digits, seed=4)
    assert torch.equal(a, b) and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(a, c)
    assert a.shape == (300, 1, 56, 56) and a.min() >= 0 and a.max() <= 1


def test_recorded_boxes_hold_the_digit(digits):
    img, p = clutter_images(digits, seed=0, clutter=0, canvas=64, scale_range=(0.6, 2.0))
    box = p["box"]
    assert (box[:, :2] >= 0).all() and (box[:, 2:] <= 64).all()
    assert torch.allclose(box[:, 2] - box[:, 0], 28 * p["scale"]) and (p["scale"] >= 0.6).all() and (p["scale"] <= 2).all()
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    # a bilinear warp by s spreads the box [x1, x2] (pixel centres at x1 - 0.5 ... x2 - 0.5) by s / 2 pixels
    half = (p["scale"] / 2)[:, None, None]
    inside = ((xs > box[:, 0, None, None] - 0.5 - half) & (xs < box[:, 2, None, None] - 0.5 + half) &
              (ys > box[:, 1, None, None] - 0.5 - half) & (ys < box[:, 3, None, None] - 0.5 + half))
    mass = img[:, 0]
    assert torch.allclose((mass * inside).sum((1, 2)), mass.sum((1, 2)), atol=1e-4)  # all ink inside the recorded box
    # the ink's mass scales with the area (bilinear warp): scale^2 times the original
    ratio = mass.sum((1, 2)) / digits[:, 0].sum((1, 2))
    assert torch.allclose(ratio, p["scale"] ** 2, rtol=0.15)


def test_clutter_adds_ink_outside_the_box(digits):
    clean, _ = clutter_images(digits, seed=0, clutter=0)
    cl, p = clutter_images(digits, seed=0, clutter=4)
    assert (cl >= clean - 1e-6).all() and (cl.sum() > clean.sum())


def test_bad_options(digits):
    with pytest.raises(ValueError, match=r"scale_range: expected scales in \(0, 2\] so a 28x28 digit fits a 56x56"):
        clutter_images(digits, seed=0, scale_range=(0.5, 3.0))


def test_registered_and_loaded_by_spec(mnist_root):
    from robustbench_geo.data import dataset_info, load_dataset

    assert dataset_info("mnist-cluttered").image_size == (56, 56)
    ds = load_dataset("mnist-cluttered:clutter=2", split="test", root=mnist_root, seed=1, subset=50)
    assert ds.images.shape == (50, 1, 56, 56) and ds.meta["transform"]["clutter"] == 2 and ds.meta["seed"] == 1
