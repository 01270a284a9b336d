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
The MNIST-like archives are parsed directly (no decompressed copy is written or read); CIFAR-10's
extracted batches are checked by torchvision against their own MD5s.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd

from robustbench_geo.data.base import ImageDataset
from robustbench_geo.data.root import ChecksumError, prepare_files, resolve_data_root


def _idx_files(cls) -> list[tuple[str, str, str]]:
    folder = cls.__name__
    mirror = cls.mirrors[0]
    return [(f"{folder}/raw/{fname}", md5, mirror + fname) for fname, md5 in cls.resources]


def read_idx_gz(path: Path) -> torch.Tensor:
    """Parse an IDX file (the MNIST format) straight from its checksummed ``.gz``.

    torchvision decompresses the archives next to them and then reads the uncompressed copies,
    which nothing checks (the same size with corrupted bytes loads silently); reading the verified
    archive leaves no unchecked copy in the data root or the cache.

    Returns:
        ``uint8`` tensor of the file's shape (``(N, 28, 28)`` images or ``(N,)`` labels).
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ChecksumError(f"{path}: expected an IDX file of unsigned bytes, got header {data[:4].hex()}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ChecksumError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, got {body.size}")
    return torch.from_numpy(body.copy()).view(*dims)


def _load_mnist_like(cls, name: str, split: str, root, download: bool) -> ImageDataset:
    root = resolve_data_root(root)
    files = _idx_files(cls)
    work = prepare_files(name, root, files, download_missing=download)  # checksums every archive
    prefix = "train" if split == "train" else "t10k"
    raw = {rel.rsplit("/", 1)[1].split("-")[1]: work / rel for rel, _, _ in files if rel.rsplit("/", 1)[1].startswith(prefix)}
    images = read_idx_gz(raw["images"]).unsqueeze(1).float().div_(255.0)
    labels = read_idx_gz(raw["labels"]).long()
    meta = {"dataset": name, "split": split, "source": f"{cls.__name__} IDX files (torchvision layout)", "root": str(root)}
    return ImageDataset(name, images, labels, list(cls.classes), meta)


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
