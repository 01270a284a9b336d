"""The same sweep gives the same stored results on every executor (sequential, worker processes, Ray)."""

from __future__ import annotations

import pytest

from robustbench_geo.sweep import ResultStore, load_config, run_sweep
from tests.sweep.conftest import tiny_toml


def _run(tmp_path, name, **kwargs):
    out = tmp_path / name
    toml = tmp_path / f"{name}.toml"
    # each executor trains its own models (own checkpoint cache): training is compared too
    text = tiny_toml(out, seeds=(0,), cache=tmp_path / f"ckpt-{name}", graph=True).replace("epochs = 30", "epochs = 5")
    toml.write_text(text)
    summary = run_sweep(load_config(toml), progress=False, report=False, threads=1, **kwargs)
    assert not summary.failed, summary.failed
    with ResultStore(out, "tiny") as store:
        return {r["hash"]: r["metrics"] for r in store.cells()}, summary


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, mnist_root, cora_root):
    return _run(tmp_path_factory.mktemp("seq"), "seq")[0]


def test_worker_processes_match_sequential(tmp_path, sequential):
    results, summary = _run(tmp_path, "jobs", jobs=2)
    assert len(summary.ran) == 2
    assert results == sequential


def test_ray_matches_sequential(tmp_path, sequential):
    ray = pytest.importorskip("ray", reason="Ray is the optional extra 'ray': pip install -e '.[ray]'")
    results, summary = _run(tmp_path, "ray", executor="ray")
    assert not ray.is_initialized()  # the executor shut down the local instance it started
    assert len(summary.ran) == 2
    assert results == sequential
