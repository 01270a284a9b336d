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


def test_workers_are_not_handed_cells_that_would_wait_for_another_workers_training():
    from types import SimpleNamespace

    from robustbench_geo.sweep.driver import _interleave, _next_ready

    cell = lambda name, model: SimpleNamespace(name=name, train_hash=model)  # noqa: E731
    cells = [cell(f"{m}{i}", m) for m in ("cnn", "dcnn", "gcn") for i in range(3)]
    queue = _interleave(cells)  # the two workers start by training different models
    assert [c.name for c in queue[:3]] == ["cnn0", "dcnn0", "gcn0"]
    in_flight = [queue.pop(0), queue.pop(0)]  # cnn0 and dcnn0 are training
    trained: set[str] = set()
    # cnn0 finishes: its worker takes gcn0, not cnn1's sibling dcnn1 that would block on dcnn's lock
    trained.add(in_flight.pop(0).train_hash)
    assert queue[_next_ready(queue, in_flight, trained)].name == "gcn0"
    in_flight.append(queue.pop(_next_ready(queue, in_flight, trained)))
    # gcn0 finishes: cnn1 is ready (cnn is trained), dcnn1 still is not
    trained.add(in_flight.pop().train_hash)
    order = []
    while queue:
        i = _next_ready(queue, in_flight, trained)
        order.append(queue.pop(i).name)
        if order[-1] == "gcn2":
            break
    assert order == ["cnn1", "gcn1", "cnn2", "gcn2"]  # every dcnn cell deferred while dcnn0 trains
    assert _next_ready([cell("d", "dcnn")], in_flight, trained) == 0  # nothing else to run: take it
    trained.add("dcnn")
    assert _next_ready([cell("d", "dcnn")], in_flight, trained) == 0


def _warning_filters(**_):
    import warnings

    return [(action, category.__name__, getattr(module, "pattern", module)) for action, _, category, module, _ in
            warnings.filters]


def test_worker_processes_inherit_the_drivers_warning_filters():
    import warnings

    from robustbench_geo.sweep.executors import ProcessExecutor

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="some_library")
        expected = _warning_filters()
        ex = ProcessExecutor(1, threads=1)
        try:
            ex.submit("k", _warning_filters, {})
            key, got = ex.next_result()
        finally:
            ex.shutdown()
    assert key == "k" and all(f in got for f in expected)  # libraries the worker imports may add their own
    assert ("ignore", "FutureWarning", "some_library") in got


def _segfault(**_):
    import ctypes

    ctypes.string_at(0)  # reads address 0: the process dies of SIGSEGV


def _sleep_then_answer(seconds: float = 2.0, **_):
    import time

    time.sleep(seconds)
    return {"ok": True, "pid": __import__("os").getpid()}


def test_a_worker_that_segfaults_fails_only_its_own_cell():
    """Each worker has its own pool: the cell beside a segfault finishes, and the dead worker is replaced."""
    from robustbench_geo.sweep.executors import ProcessExecutor

    ex = ProcessExecutor(2, threads=1)
    try:
        ex.submit("crash", _segfault, {})
        ex.submit("fine", _sleep_then_answer, {"seconds": 3.0})
        results = dict(ex.next_result() for _ in range(2))
        ex.submit("after", _sleep_then_answer, {"seconds": 0.0})  # the crashed slot takes new cells
        key, after = ex.next_result()
    finally:
        ex.shutdown()
    assert not results["crash"]["ok"] and "SIGSEGV" in results["crash"]["error"], results["crash"]
    assert results["fine"]["ok"], results["fine"]
    assert key == "after" and after["ok"]


def test_one_job_runs_in_a_worker_when_cells_run_user_code():
    from robustbench_geo.sweep.executors import LocalExecutor, ProcessExecutor, make_executor

    assert isinstance(make_executor("local", jobs=1), LocalExecutor)
    isolated = make_executor("local", jobs=1, isolate=True)
    try:
        assert isinstance(isolated, ProcessExecutor) and isolated.slots == 1
        assert isolated.threads is None  # torch's default in the worker, as in the driver
    finally:
        isolated.shutdown()
