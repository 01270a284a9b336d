"""Bad input and faults at the CLI boundary: one row per case (docs/errors.md lists the same table).

Every row runs ``rbgeo`` in-process with click's ``CliRunner`` in a fresh working folder and checks
the exit code (2: bad input, 1: environment), the words of the one-line message, and that nothing
was written: no new file in the working folder (where outputs would go), no change to the shared
checkpoints, no file in the data root. The tiny checkpoints are trained once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from click.testing import CliRunner

from robustbench_geo.cli import main
from tests.sweep.conftest import tiny_toml

PLUGIN = '''
import torch.nn as nn


class NanNet(nn.Module):
    def __init__(self, num_classes=10, **kwargs):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def nan_model(**kwargs):
    return NanNet(**kwargs)


def exits(**kwargs):
    raise SystemExit(0)


def meta_model(num_classes=10, **kwargs):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes, device="meta"))  # parameters without values


def exits_os(**kwargs):
    import os

    os._exit(0)  # would end the whole process with status 0
'''


@pytest.fixture(scope="module")
def ck(tmp_path_factory, mnist_root, cora_root):
    """Tiny checkpoints: madry_cnn on 500 MNIST images (1 epoch), gcn on cora, and damaged copies."""
    from robustbench_geo.checkpoint import save_checkpoint
    from robustbench_geo.training import fit

    d = tmp_path_factory.mktemp("bad_input_ck")
    madry = fit("madry_cnn", "mnist", epochs=1, subset=500, test_subset=100, batch_size=100, out=d / "madry",
                data_root=mnist_root, progress=False)
    fit("gcn", "cora", epochs=20, out=d / "gcn", data_root=cora_root, progress=False)
    nan_net = madry.model
    with torch.no_grad():
        for p in nan_net.parameters():
            p.fill_(float("nan"))
    save_checkpoint(d / "nan", nan_net, madry.meta)
    shutil.copy(d / "madry.safetensors", d / "task.safetensors")
    (d / "task.json").write_text(json.dumps({**json.loads((d / "madry.json").read_text()), "task": "graph"}))
    shutil.copy(d / "madry.safetensors", d / "edited.safetensors")  # same weights, JSON says another model
    (d / "edited.json").write_text(json.dumps({**json.loads((d / "madry.json").read_text()), "model": "atrous_cnn"}))
    (d / "zero.safetensors").symlink_to("/dev/zero")
    shutil.copy(d / "madry.json", d / "zero.json")
    (d / "plug.py").write_text(PLUGIN)
    (d / "badimport.py").write_text("raise RuntimeError('broken at import')\n")
    return d


@dataclass
class Case:
    """``args`` may hold ``{ck}`` (checkpoints), ``{w}`` (the working folder) and ``{data}`` (data root)."""

    id: str
    args: str
    code: int
    words: tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    env: dict = field(default_factory=dict)
    process: bool = False  # run ``python -m robustbench_geo`` in its own process (for code that could end it)


def _toml(text: str, name: str = "s.toml"):
    def setup(w: Path) -> None:
        (w / name).write_text(text.replace("OUT", str(w / "out")))

    return setup


def _grid(values: str) -> str:
    return tiny_toml("OUT", attacks=f'\n[attacks.grid]\nattack = "grid"\ngrid = {{ max_angle_deg = [{values}] }}\n')


def _foreign_sqlite(w: Path) -> None:
    (w / "out").mkdir()
    con = sqlite3.connect(w / "out" / "results.sqlite")
    con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    con.commit()
    con.close()


def _a_file(rel: str):
    def setup(w: Path) -> None:
        (w / rel).write_text("a file, not a folder\n")

    return setup


def _read_only(rel: str):
    def setup(w: Path) -> None:
        (w / rel).mkdir()
        (w / rel).chmod(stat.S_IRUSR | stat.S_IXUSR)

    return setup


def _store(w: Path) -> None:
    from robustbench_geo.sweep.store import ResultStore

    ResultStore(w / "out", "tiny").close()


def _report_html_folder(w: Path) -> None:
    _store(w)
    (w / "out" / "report.html").mkdir()


def _empty_store(w: Path) -> None:
    (w / "out").mkdir()
    (w / "out" / "results.sqlite").touch()


def _corrupt_mnist(w: Path) -> None:
    root = Path(os.environ["RBGEO_DATA"])
    shutil.copytree(root / "MNIST", w / "root" / "MNIST")
    f = w / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    f.chmod(0o644)
    data = bytearray(f.read_bytes())
    data[-10:] = b"\x00" * 10  # same size, other bytes
    f.write_bytes(bytes(data))


ATTACK = "attack {ck}/madry mnist --quiet --n 20 --attack"
GRAPH_ATTACK = "attack {ck}/gcn cora --quiet --attack dice"
TRAIN = "train madry_cnn mnist --quiet --epochs 1 --subset 64 --test-subset 32 --out {w}/new"
CERTIFY = "certify {ck}/madry mnist --quiet --n 5 --samples 20 --n0 10 --no-attack"


def _certify_table(body: str) -> str:
    return tiny_toml("OUT", attacks=f'\n[certify.c]\ntransform = "rotation"\n{body}\n')

CASES = [
    # wrong numbers from infinite or ill-typed budgets
    Case("grid-inf-angle", f"{ATTACK} grid --param max_angle_deg=inf --param angle_steps=3", 2, ("max_angle_deg", "finite")),
    Case("grid-inf-shift", f"{ATTACK} grid --param max_shift_px=inf", 2, ("max_shift_px", "finite")),
    Case("worst-of-k-1e308", f"{ATTACK} worst_of_k --param max_angle_deg=1e308", 2, ("max_angle_deg", "180")),
    Case("affine-pgd-inf-scale", f"{ATTACK} affine_pgd --param scale_range=[0.5,inf]", 2, ("scale_range", "finite")),
    Case("scale-1e300", f"{ATTACK} scale --param scale_range=[0.5,1e300]", 2, ("scale_range", "10000.0", "1e+300")),
    Case("scale-nan-scale", f"{ATTACK} scale --param scale_range=[nan,1.0]", 2, ("scale_range", "finite")),
    Case("random-nan-angle", f"{ATTACK} random --param max_angle_deg=nan", 2, ("max_angle_deg", "finite")),
    Case("sweep-grid-inf", "sweep {w}/s.toml --quiet", 2, ("max_angle_deg", "finite", "line"), _toml(_grid("inf"))),
    Case("sweep-grid-bool", "sweep {w}/s.toml --quiet", 2, ("max_angle_deg", "got True"), _toml(_grid("true"))),
    Case("angle-steps-true", f"{ATTACK} grid --param angle_steps=true", 2, ("angle_steps", "integer", "True")),
    Case("angle-steps-abc", f"{ATTACK} grid --param angle_steps=abc", 2, ("angle_steps", "integer", "'abc'")),
    Case("n-too-large", f"{ATTACK} grid --n 10000000", 2, ("10000", "10000000")),
    Case("n-zero", f"{ATTACK} grid --n 0", 2, ("--n", "integer >= 1")),
    Case("seeds-zero", f"{ATTACK} grid --seeds 0", 2, ("--seeds",)),
    Case("seed-huge", f"{ATTACK} grid --seed 99999999999999999999", 2, ("--seed", "99999999999999999999")),
    Case("sweep-seed-huge", "sweep {w}/s.toml --quiet", 2, ("seeds[0]", "18446744073709551617", "line"),
         _toml(tiny_toml("OUT", seeds=(18446744073709551617,)))),
    # certification: the same checks as attacks
    Case("certify-sigma-inf", f"{CERTIFY} --sigma inf", 2, ("--sigma", "finite")),
    Case("certify-angle-200", f"{CERTIFY} --max-angle-deg 200", 2, ("max_angle_deg", "[0.0, 180.0]", "200")),
    Case("certify-cells-zero", f"{CERTIFY} --cells 0", 2, ("--cells", ">= 1", "got 0")),
    Case("certify-samples-zero", f"{CERTIFY} --samples 0", 2, ("--samples", ">= 1", "got 0")),
    Case("sweep-certify-sigma-inf", "sweep {w}/s.toml --quiet", 2, ("certify.c", "sigma", "finite"),
         _toml(_certify_table("sigma = inf"))),
    Case("sweep-certify-angle-200", "sweep {w}/s.toml --quiet", 2, ("certify.c.params", "max_angle_deg", "180"),
         _toml(_certify_table("params = { max_angle_deg = 200 }"))),
    Case("sweep-certify-cells-zero", "sweep {w}/s.toml --quiet", 2, ("certify.c.cells", "got 0", "line"),
         _toml(_certify_table("cells = 0"))),
    # sizes checked against an estimate before any work
    Case("grid-angle-steps-huge", f"{ATTACK} grid --param angle_steps=100000000", 2,
         ("angle_steps=100000000", "would allocate", "memory available")),
    Case("grid-shift-steps-huge", f"{ATTACK} grid --param shift_steps=100000", 2, ("shift_steps=100000", "would allocate")),
    Case("worst-of-k-huge", f"{ATTACK} worst_of_k --param k=1000000000", 2, ("k=1000000000", "use a smaller k")),
    Case("certify-cells-huge", f"{CERTIFY} --transform translation --cells 100000", 2, ("cells=100000^2", "would allocate")),
    Case("certify-shift-huge", f"{CERTIFY} --transform translation --max-shift-px 1e6", 2, ("max_shift_px", "10000.0")),
    Case("epochs-huge", f"{TRAIN} --epochs 100000000000", 2, ("epochs=100000000000", "days", "fewer epochs")),
    # options that do not apply
    Case("budget-on-image", f"{ATTACK} grid --budget 0.05", 2, ("--budget", "applies to graph attacks only", "an image attack")),
    Case("mode-on-image", f"{ATTACK} grid --mode poisoning", 2, ("--mode", "graph attacks only")),
    Case("n-on-graph", f"{GRAPH_ATTACK} --n 10", 2, ("--n", "applies to image attacks only", "a graph attack")),
    Case("batch-size-on-graph", f"{GRAPH_ATTACK} --batch-size 8", 2, ("--batch-size", "image attacks only")),
    Case("budget-twice", f"{GRAPH_ATTACK} --budget 0.1 --param budget_edge_fraction=0.05", 2,
         ("budget=0.1", "budget_edge_fraction=0.05", "give only one")),
    Case("auto-stop-accuracy-above-1", "attack {ck}/gcn cora --quiet --attack auto --param stop_accuracy=1.5", 2,
         ("stop_accuracy", "[0, 1]", "1.5")),
    Case("backend-bogus", f"{ATTACK} grid --deform-backend bogus", 2, ("--deform-backend", "bogus", "native")),
    # training and dataset options
    Case("lr-inf", f"{TRAIN} --lr inf", 2, ("lr", "finite")),
    Case("lr-zero", f"{TRAIN} --lr 0", 2, ("lr", "(0.0")),
    Case("subset-zero", f"{TRAIN.replace('--subset 64', '--subset 0')}", 2, ("subset", "[1, 60000]", "got 0")),
    Case("batch-size-zero", f"{TRAIN} --batch-size 0", 2, ("batch_size",)),
    Case("epochs-zero", f"{TRAIN} --epochs 0", 2, ("epochs", ">= 1", "got 0")),
    Case("graph-train-subset", "train gcn cora --quiet --epochs 2 --subset 10 --out {w}/new", 2,
         ("--subset", "image datasets only")),
    Case("graph-train-batch-size", "train gcn cora --quiet --epochs 2 --batch-size 7 --out {w}/new", 2,
         ("--batch-size", "image datasets only")),
    Case("num-classes", f"{TRAIN} --param num_classes=5", 2, ("num_classes", "10", "got 5")),
    Case("in-channels", f"{TRAIN} --param in_channels=3", 2, ("in_channels", "got 3")),
    Case("rotated-inf", "eval {ck}/madry mnist-rotated:max_angle_deg=inf --subset 10", 2, ("max_angle_deg", "finite")),
    Case("dataset-option-unknown", "eval {ck}/madry mnist-rotated:angle=3", 2, ("unknown options", "max_angle_deg")),
    Case("toml-epochs-string", "sweep {w}/s.toml --quiet", 2, ("epochs", "'one'", "line"),
         _toml(tiny_toml("OUT").replace("epochs = 1", 'epochs = "one"'))),
    Case("toml-not-utf8", "sweep {w}/s.toml --quiet", 2, ("s.toml", "UTF-8"),
         lambda w: (w / "s.toml").write_bytes(b"[sweep]\nname = \"caf\xe9\"\n")),
    Case("sweep-missing-file", "sweep {w}/missing.toml", 2, ("missing.toml", "not found")),
    Case("sweep-data-missing", "sweep {w}/s.toml --quiet", 1,
         ("data root", "{w}/empty", "t10k-images-idx3-ubyte.gz", "mirror", "No cell was run"),
         lambda w: (_toml(tiny_toml("OUT"))(w), (w / "empty").mkdir()), {"RBGEO_DATA": "{w}/empty"}),
    Case("sweep-seeds-int", "sweep {w}/s.toml --quiet", 2, ("sweep.seeds", "line", "[3]", "3 seeds"),
         _toml(tiny_toml("OUT").replace("seeds = [0]", "seeds = 3"))),
    Case("sweep-name-empty", "sweep {w}/s.toml --quiet", 2, ("sweep.name", "non-empty"),
         _toml(tiny_toml("OUT").replace('name = "tiny"', 'name = ""'))),
    Case("sweep-output-empty", "sweep {w}/s.toml --quiet", 2, ("sweep.output", "got ''"),
         _toml(tiny_toml("OUT").replace('output = "OUT"', 'output = ""'))),
    Case("sweep-graph-attack-no-graph", "sweep {w}/s.toml --quiet", 2, ("attacks.d.attack", "no graph dataset", "no cell"),
         _toml(tiny_toml("OUT", attacks='\n[attacks.d]\nattack = "dice"\n'))),
    Case("sweep-checkpoint-cache-is-file", "sweep {w}/s.toml --quiet", 1, ("checkpoint_cache", "is a file"),
         lambda w: (_toml(tiny_toml("OUT", cache="CACHE").replace("CACHE", str(w / "cache")))(w), _a_file("cache")(w))),
    Case("sweep-checkpoint-cache-read-only", "sweep {w}/s.toml --quiet", 1, ("checkpoint_cache", "not writable"),
         lambda w: (_toml(tiny_toml("OUT", cache="CACHE").replace("CACHE", str(w / "rocache")))(w),
                    _read_only("rocache")(w))),
    Case("sweep-cache-read-only", "sweep {w}/s.toml --quiet", 1, ("RBGEO_CACHE", "not writable"),
         lambda w: (_toml(tiny_toml("OUT"))(w), _read_only("rocache")(w)), {"RBGEO_CACHE": "{w}/rocache"}),
    Case("sweep-test-subset-too-large", "sweep {w}/s.toml --quiet", 2,
         ("datasets.mnist.test_subset", "[1, 10000]", "got 100000"),
         _toml(tiny_toml("OUT").replace("test_subset = 60", "test_subset = 100000"))),
    Case("sweep-test-subset-too-large-dry-run", "sweep {w}/s.toml --dry-run", 2,
         ("datasets.mnist.test_subset", "got 100000"),
         _toml(tiny_toml("OUT").replace("test_subset = 60", "test_subset = 100000"))),
    Case("sweep-model-params-in-channels", "sweep {w}/s.toml --quiet", 2,
         ("models.cnn.params", "line", "in_channels", "set by the data"),
         _toml(tiny_toml("OUT").replace("epochs = 1", "epochs = 1\nparams = { in_channels = 3 }"))),
    Case("sweep-model-params-typo", "sweep {w}/s.toml --quiet", 2, ("models.cnn.params", "hiddn", "Valid parameters"),
         _toml(tiny_toml("OUT").replace("epochs = 1", "epochs = 1\nparams = { hiddn = 3 }"))),
    Case("sweep-budget-twice", "sweep {w}/s.toml --quiet", 2, ("attacks.d.budget", "budget_edge_fraction", "only one"),
         _toml(tiny_toml("OUT", graph=True, attacks='\n[attacks.d]\nattack = "dice"\nbudget = [0.1]\n'
                                                     'params = { budget_edge_fraction = 0.05 }\n'))),
    Case("sweep-epochs-zero", "sweep {w}/s.toml --quiet", 2, ("models.cnn.epochs", ">= 1", "got 0"),
         _toml(tiny_toml("OUT").replace("epochs = 1", "epochs = 0"))),
    Case("limit-negative", "sweep {w}/s.toml --quiet --limit -1", 2, ("--limit", "got -1"), _toml(tiny_toml("OUT"))),
    Case("threads-negative", "sweep {w}/s.toml --quiet --threads -3", 2, ("--threads", "got -3"), _toml(tiny_toml("OUT"))),
    # dataset variant and split of a checkpoint
    Case("gcn-on-public", "eval {ck}/gcn cora:public", 2, ("trained on", "public", "--force")),
    Case("gcn-on-nettack-split", "eval {ck}/gcn cora:nettack", 2, ("split", "--force")),
    Case("gcn-attack-on-public", f"{GRAPH_ATTACK.replace('cora', 'cora:public')}", 2, ("--force",)),
    # models: NaN logits, exits, shape, broken plug-ins
    Case("plugin-nan-logits", "train {ck}/plug.py:nan_model mnist --quiet --epochs 1 --subset 64 --out {w}/new", 2,
         ("nan_model", "finite")),
    Case("checkpoint-nan-weights", "eval {ck}/nan mnist --subset 10", 2, ("finite",)),
    Case("factory-sys-exit", "train {ck}/plug.py:exits mnist --quiet --epochs 1 --subset 64 --out {w}/new", 1,
         ("sys.exit(0)",)),
    Case("factory-os-exit", "eval --model {ck}/plug.py:exits_os mnist --subset 10", 1, ("exits_os", "os._exit(0)"),
         process=True),
    Case("plugin-raises-on-import", "train {ck}/badimport.py:f mnist --out {w}/new", 2,
         ("badimport.py", "RuntimeError", "broken at import")),
    Case("plugin-meta-model", "eval --model {ck}/plug.py:meta_model mnist --subset 10", 2, ("meta_model", "meta device")),
    Case("plugin-without-factory", "eval --model {ck}/plug.py mnist --subset 10", 2, ("plug.py", "FILE.py:FACTORY")),
    Case("model-param-typo", f"{TRAIN} --param num_clases=10", 2, ("num_clases", "Did you mean 'num_classes'", "in_channels")),
    Case("plugin-file-missing", "train {w}/nothere.py:f mnist --out {w}/new", 2, ("nothere.py", "not found")),
    # checkpoints and data on disk
    Case("checkpoint-task-edited", "eval {ck}/task mnist", 1, ("task", "edited")),
    Case("checkpoint-model-edited", "eval {ck}/edited mnist --subset 10", 1, ("edited.json", "edited after it was saved")),
    Case("checkpoint-dev-zero", "eval {ck}/zero mnist", 1, ("not a regular file", "/dev/zero")),
    Case("checkpoint-missing", "eval {w}/nope mnist", 1, ("not found",)),
    Case("mnist-corrupted", "eval {ck}/madry mnist --data-root {w}/root", 1, ("checksum", "t10k-labels"), _corrupt_mnist),
    # devices
    Case("device-typo", f"{ATTACK} grid --device cdua", 2, ("--device", "cdua")),
    Case("device-cuda-missing", f"{ATTACK} grid --device cuda", 1, ("--device", "no CUDA device")),
    # output paths and stores
    Case("attack-out-is-file", f"{ATTACK} grid --out {{w}}/taken", 2, ("--out", "is a file"), _a_file("taken")),
    Case("train-out-not-writable", "train madry_cnn mnist --out {w}/ro/ck", 1, ("--out", "not writable"), _read_only("ro")),
    Case("train-out-parent-is-file", "train madry_cnn mnist --out {w}/taken/ck", 2, ("--out", "is a file"),
         _a_file("taken")),
    Case("sweep-output-is-file", "sweep {w}/s.toml --quiet --output {w}/taken", 2, ("--output", "is a file"),
         lambda w: (_toml(tiny_toml("OUT"))(w), _a_file("taken")(w))),
    Case("export-missing-folder", "results export {w}/out --out {w}/no/such/dir/x.csv", 2, ("does not exist",), _store),
    Case("results-foreign-sqlite", "results list {w}/out", 2, ("something else", "photos"), _foreign_sqlite),
    Case("sweep-foreign-sqlite", "sweep {w}/s.toml --quiet", 2, ("something else",),
         lambda w: (_toml(tiny_toml("OUT"))(w), _foreign_sqlite(w))),
    Case("results-empty-store", "results list {w}/out", 2, ("results.sqlite", "empty", "untouched"), _empty_store),
    Case("report-empty-store", "report {w}/out", 2, ("results.sqlite", "empty", "untouched"), _empty_store),
    Case("report-html-is-folder", "report {w}/out", 2, ("report.html", "is a folder", "nothing was written"),
         _report_html_folder),
    Case("results-missing-store", "results list {w}/nowhere", 2, ("no results store",)),
    Case("cache-is-file", "eval {ck}/madry mnist --subset 10", 1, ("RBGEO_CACHE", "is a file"), _a_file("cache"),
         {"RBGEO_CACHE": "{w}/cache"}),
    Case("cache-read-only", "eval {ck}/madry mnist --subset 10", 1, ("RBGEO_CACHE", "not writable"), _read_only("rocache"),
         {"RBGEO_CACHE": "{w}/rocache", "RBGEO_DATA_READONLY": "1"}),
]


def _snapshot(*folders: Path) -> dict:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = (p.is_dir(), 0 if p.is_dir() or p.is_symlink() else p.stat().st_mtime_ns)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ck, tmp_path, monkeypatch):
    if case.id == "device-cuda-missing" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.chdir(w)
    if case.setup:
        case.setup(w)
    fmt = {"ck": ck, "w": w, "data": os.environ["RBGEO_DATA"]}
    args = [a.format(**fmt) for a in case.args.split()]
    env = {k: v.format(**fmt) for k, v in case.env.items()}
    before = _snapshot(w, ck)
    data_before = _snapshot(Path(os.environ["RBGEO_DATA"]))
    if case.process:
        run = subprocess.run([sys.executable, "-m", "robustbench_geo", *args], cwd=w, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=300)
        exit_code, output, exception = run.returncode, run.stdout + run.stderr, None
    else:
        result = CliRunner().invoke(main, args, env=env)
        exit_code, output, exception = result.exit_code, result.output, result.exception
    try:
        assert exit_code == case.code, (output, exception)
        message = output.strip()
        assert message.startswith("Error: ") and len(message.splitlines()) == 1, message  # one line, usage errors too
        for word in case.words:
            word = word.format(**fmt)
            assert word in message, f"{word!r} not in {message!r}"
        assert _snapshot(w, ck) == before, "something was written"
        assert _snapshot(Path(os.environ["RBGEO_DATA"])) == data_before
    finally:
        for p in w.rglob("*"):  # read-only folders would stop pytest's clean-up
            if p.is_dir():
                p.chmod(0o755)


def test_debug_shows_the_traceback_with_the_same_exit_code(ck, tmp_path):
    """``--debug`` prints the traceback instead of the one line, and keeps the exit code (it used to turn 2 into 1)."""
    bad = CliRunner().invoke(main, ["--debug", "attack", f"{ck}/madry", "mnist", "--attack", "grid",
                                    "--param", "max_angle_deg=inf"])
    assert bad.exit_code == 2, bad.output
    assert "Traceback" in bad.output and "ValueError" in bad.output and "max_angle_deg" in bad.output
    missing = CliRunner().invoke(main, ["--debug", "eval", str(tmp_path / "nope"), "mnist"])
    assert missing.exit_code == 1, missing.output
    assert "Traceback" in missing.output and "CheckpointError" in missing.output


def test_force_evaluates_another_split_with_a_warning(ck):
    result = CliRunner().invoke(main, ["eval", f"{ck}/gcn", "cora:nettack", "--force"])
    assert result.exit_code == 0, result.output
    assert "warning (--force)" in result.output and "clean accuracy" in result.output


def test_auto_takes_a_stop_accuracy_fraction_from_the_command_line(ck, tmp_path):
    """``stop_accuracy`` defaults to the word 'chance' but takes a fraction: ``--param stop_accuracy=1.0`` used to be
    refused ("expected a string"). At 1.0 the portfolio stops after its first member; the rest are skipped."""
    result = CliRunner().invoke(main, ["attack", f"{ck}/gcn", "cora", "--quiet", "--attack", "auto", "--budget", "0.01",
                                       "--param", "stop_accuracy=1.0", "--param", "steps=2", "--param", "refine_steps=1",
                                       "--param", "chain=false", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    outcome = json.loads((tmp_path / "out" / "outcome.json").read_text())[0]
    assert outcome["params"]["stop_accuracy"] == 1.0
    assert "robust accuracy" in result.output


def test_checkpoint_records_what_it_was_trained_on(ck):
    meta = json.loads((ck / "gcn.json").read_text())
    assert meta["trained_on"]["split"] == "prognn" and meta["trained_on"]["num_nodes"] == 2485
    assert json.loads((ck / "madry.json").read_text())["trained_on"]["classes"][0].startswith("0")


def test_uncompressed_mnist_copies_are_never_read(ck, tmp_path):
    """A corrupted decompressed file beside the checked archive changes nothing."""
    root = Path(os.environ["RBGEO_DATA"])
    shutil.copytree(root / "MNIST", tmp_path / "MNIST")
    (tmp_path / "MNIST" / "raw").chmod(0o755)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00" * (16 + 10000 * 28 * 28))
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00" * (8 + 10000))
    good = CliRunner().invoke(main, ["eval", f"{ck}/madry", "mnist", "--subset", "200"])
    copied = CliRunner().invoke(main, ["eval", f"{ck}/madry", "mnist", "--subset", "200", "--data-root", str(tmp_path)])
    assert good.exit_code == copied.exit_code == 0, copied.output
    assert good.output.split(":")[-1] == copied.output.split(":")[-1]  # the same accuracy line


def test_sweep_cell_whose_factory_exits_is_failed_not_running(ck, tmp_path):
    """``SystemExit(0)`` in a factory fails its cell (exit 1); no cell is left ``running``."""
    from robustbench_geo.sweep.store import ResultStore

    text = tiny_toml(tmp_path / "out", cache=tmp_path / "cache").replace('model = "cnn"', f'model = "{ck}/plug.py:exits"')
    (tmp_path / "s.toml").write_text(text)
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "s.toml"), "--quiet", "--no-report"])
    assert result.exit_code == 1 and "1 cell(s) failed" in result.output
    with ResultStore(tmp_path / "out") as store:
        assert store.status_counts() == {"failed": 1}
        assert "SystemExit" in store.cells()[0]["error"]


def test_summary_markdown_escapes_labels():
    import pandas as pd

    from robustbench_geo.report.tables import summary_markdown

    row = {"model": "a|b<script>", "dataset": "d`x`", "attack": "*y*", "setting": "s\nt", "seeds": 1,
           "clean_accuracy": 0.5, "clean_accuracy_std": None, "robust_accuracy": 0.25, "robust_accuracy_std": None,
           "success_rate": 0.5, "success_rate_std": None}
    md = summary_markdown(pd.DataFrame([row]), "n`ame")
    assert "a\\|b\\<script\\>" in md and "d\\`x\\`" in md and "\\*y\\*" in md and "s t" in md
    assert "<script>" not in md and "# Sweep n\\`ame" in md
    assert len(md.strip().splitlines()) == 7  # title, blank, note, blank, header, rule and the one row


def test_read_commands_leave_a_store_as_it_was(tmp_path):
    """``results``, ``report`` and ``--dry-run`` open the store read-only: a 0-byte file stays 0 bytes, a real store
    gets no ``-wal``/``-shm`` companions and keeps its bytes."""
    from robustbench_geo.sweep.store import ResultStore

    (tmp_path / "s.toml").write_text(tiny_toml(tmp_path / "out"))
    _empty_store(tmp_path)
    for args in (["results", "list", str(tmp_path / "out")], ["sweep", str(tmp_path / "s.toml"), "--dry-run"]):
        CliRunner().invoke(main, args)
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["results.sqlite"], args
        assert (tmp_path / "out" / "results.sqlite").stat().st_size == 0, args
    (tmp_path / "out" / "results.sqlite").unlink()
    ResultStore(tmp_path / "out", "tiny").close()
    before = (tmp_path / "out" / "results.sqlite").read_bytes()
    for args in (["results", "list", str(tmp_path / "out")], ["results", "export", str(tmp_path / "out")],
                 ["sweep", str(tmp_path / "s.toml"), "--dry-run"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["results.sqlite"], args
        assert (tmp_path / "out" / "results.sqlite").read_bytes() == before, args
