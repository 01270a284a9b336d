"""Tiny models trained on real MNIST samples for the attack tests (seconds on two CPU cores)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 7 * 7, 10))


@pytest.fixture(scope="session")
def mnist_small(mnist_test):
    """The last 64 MNIST test images (disjoint from the images the tiny model is trained on)."""
    from robustbench_geo.data.base import ImageDataset

    return ImageDataset("mnist", mnist_test.images[-64:], mnist_test.labels[-64:], mnist_test.classes,
                        {**mnist_test.meta, "slice": "last 64"})


@pytest.fixture(scope="session")
def tiny_model(mnist_test):
    """A small CNN trained for 2 epochs on the first 3000 MNIST test images (~90 % accuracy on the rest).

    Training on the (already loaded) test split keeps the fixture to a second or two; the attacked
    images (:func:`mnist_small`) are disjoint from the training images.
    """
    images, labels = mnist_test.images[:3000], mnist_test.labels[:3000]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        perm = torch.randperm(len(images), generator=g)
        for i in range(0, len(images), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    return model.eval()


class DiskVsRing(nn.Module):
    """Rotation-invariant toy classifier: class 0 if the ink inside a centred disk outweighs the ring around it.

    Rotations about the image centre map the disk and the ring onto themselves, so only
    interpolation error can change the logits.
    """

    def __init__(self, size=28, radius=7.0, outer=13.5):
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
        r = (xx ** 2 + yy ** 2).sqrt()
        self.register_buffer("disk", (r <= radius).float())
        self.register_buffer("ring", ((r > radius) & (r <= outer)).float())

    def forward(self, x):
        m = x.sum(1)
        return torch.stack([(m * self.disk).sum((1, 2)), (m * self.ring).sum((1, 2))], 1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on tiny batches: one intra-op thread avoids oversubscription on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
