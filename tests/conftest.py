"""Shared fixtures: the offline data mirror (read-only) and a per-session writable cache.

``RBGEO_DATA`` points at the data root (``.ci/run`` sets it to ``../shared/data`` when present);
tests that need real files skip with a clear reason when it is missing. The cache that receives
copies of raw files is a temporary folder for the whole session, so tests never write into the
mirror or into the user's home.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    if not os.environ.get("RBGEO_DATA") and _MIRROR.is_dir():
        os.environ["RBGEO_DATA"] = str(_MIRROR)
    if not os.environ.get("RBGEO_CACHE"):
        import tempfile

        os.environ["RBGEO_CACHE"] = tempfile.mkdtemp(prefix="rbgeo-cache-")


def _root_with(*rel: str) -> Path:
    root = os.environ.get("RBGEO_DATA")
    if not root:
        pytest.skip("no data root: set RBGEO_DATA to the offline mirror (../shared/data)")
    missing = [r for r in rel if not (Path(root) / r).exists()]
    if missing:
        pytest.skip(f"data root {root} lacks {missing}")
    return Path(root)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    return _root_with("MNIST/raw/t10k-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="session")
def cora_root() -> Path:
    return _root_with("npz/cora.npz", "prognn/cora_prognn_splits.json", "Cora/raw/ind.cora.x")


@pytest.fixture(scope="session")
def mnist_test(mnist_root):
    from robustbench_geo.data import load_dataset

    return load_dataset("mnist", split="test", root=mnist_root)


@pytest.fixture(scope="session")
def cora(cora_root):
    from robustbench_geo.data import load_dataset

    return load_dataset("cora", root=cora_root)


@pytest.fixture(scope="session")
def omniglot_small1():
    from robustbench_geo.data.omniglot import load_omniglot

    root = _root_with("omniglot/images_background_small1.zip")
    return load_omniglot("small1", root=root)


from tests.sweep.quick_fixture import quick_sweep  # noqa: E402,F401  (the shared tiny quick-preset run)
