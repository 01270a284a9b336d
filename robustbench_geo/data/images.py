"""Image classification datasets via torchvision: ``mnist``, ``fashion-mnist``, ``cifar10``.

=============  =======  ======  ==========  =======
name           train    test    shape       classes
=============  =======  ======  ==========  =======
mnist          60,000   10,000  1 x 28x28   10
fashion-mnist  60,000   10,000  1 x 28x28   10
cifar10        50,000   10,000  3 x 32x32   10
=============  =======  ======  ==========  =======

Files live under the data root in torchvision's layout (``MNIST/raw/*.gz``,
``FashionMNIST/raw/*.gz``, ``cifar-10-python.tar.gz``) and are checked against torchvision's MD5s.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd

from robustbench_geo.data.base import ImageDataset
from robustbench_geo.data.root import prepare_files, resolve_data_root


def _idx_files(cls) -> list[tuple[str, str, str]]:
    folder = cls.__name__
    mirror = cls.mirrors[0]
    return [(f"{folder}/raw/{fname}", md5, mirror + fname) for fname, md5 in cls.resources]


def _load_mnist_like(cls, name: str, split: str, root, download: bool) -> ImageDataset:
    root = resolve_data_root(root)
    work = prepare_files(name, root, _idx_files(cls), download_missing=download)
    with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints "Using downloaded and verified file"
        ds = cls(str(work), train=(split == "train"), download=True)  # files verified: extraction only
    images = ds.data.unsqueeze(1).float().div_(255.0)
    meta = {"dataset": name, "split": split, "source": f"torchvision.datasets.{cls.__name__}", "root": str(root)}
    return ImageDataset(name, images, ds.targets.clone(), list(ds.classes), meta)


def load_mnist(split: str = "train", root=None, download: bool = True) -> ImageDataset:
    return _load_mnist_like(tvd.MNIST, "mnist", split, root, download)


def load_fashion_mnist(split: str = "train", root=None, download: bool = True) -> ImageDataset:
    return _load_mnist_like(tvd.FashionMNIST, "fashion-mnist", split, root, download)


def load_cifar10(split: str = "train", root=None, download: bool = True) -> ImageDataset:
    root = resolve_data_root(root)
    cls = tvd.CIFAR10
    extracted = Path(root) / cls.base_folder
    if extracted.is_dir():
        work = root
    else:
        work = prepare_files("cifar10", root, [(cls.filename, cls.tgz_md5, cls.url)], download_missing=download)
    with contextlib.redirect_stdout(io.StringIO()):
        ds = cls(str(work), train=(split == "train"), download=not extracted.is_dir())
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).float().div_(255.0)
    meta = {"dataset": "cifar10", "split": split, "source": "torchvision.datasets.CIFAR10", "root": str(root)}
    return ImageDataset("cifar10", images.contiguous(), torch.tensor(ds.targets), list(ds.classes), meta)
