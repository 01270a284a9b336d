"""``rbgeo eval`` / ``rbgeo attack`` with models trained elsewhere: ``--model``, ``--weights``, ``--preprocessing``.

A small MLP is trained inside the test on 300 MNIST images, on *normalised* inputs, and saved as a
safetensors file and as a ``torch.save``-d state dict; a plug-in file rebuilds it. The CLI's
numbers are compared with the accuracy computed here directly on the same test images.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from safetensors.torch import save_file

from robustbench_geo.cli import main

MEAN, STD = 0.1307, 0.3081
PREP = f"mean={MEAN},std={STD}"

PLUGIN = '''
import torch
import torch.nn as nn

WEIGHTS = {weights!r}


def arch(in_channels=1, num_classes=10, image_size=(28, 28), hidden=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1], hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def trained():
    """No arguments: returns the model trained in the test."""
    net = arch()
    net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return net
'''


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _arch(hidden=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def own(tmp_path_factory, mnist_root):
    """A plug-in file, its weights (.safetensors and .pt) and the accuracy on 200 seeded test images."""
    from robustbench_geo.data import load_dataset

    root = tmp_path_factory.mktemp("own")
    train = load_dataset("mnist", split="train", root=mnist_root, subset=300, seed=0)
    torch.manual_seed(0)
    net = _arch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = (train.images - MEAN) / STD
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), train.labels).backward()
        opt.step()
    net.eval()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(root / "net.safetensors"))
    torch.save(net.state_dict(), root / "net.pt")
    (root / "my_models.py").write_text(PLUGIN.format(weights=str(root / "net.pt")))
    test = load_dataset("mnist", split="test", root=mnist_root, subset=200, seed=0)
    with torch.no_grad():
        acc = (net((test.images - MEAN) / STD).argmax(1) == test.labels).float().mean().item()
        raw = (net(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc > 0.6 and abs(acc - raw) > 0.02  # trained, and the preprocessing matters
    return {"root": root, "plugin": root / "my_models.py", "acc": acc, "raw": raw, "data": mnist_root}


def _pct(acc: float) -> str:
    return f"clean accuracy {100 * acc:.2f} % (n=200)"


def test_eval_pretrained_factory(own):
    r = run("eval", "--model", f"{own['plugin']}:trained", "--preprocessing", PREP, "mnist", "--subset", 200,
            "--data-root", own["data"])
    assert r.exit_code == 0, r.output
    assert _pct(own["acc"]) in r.output
    r = run("eval", "--model", f"{own['plugin']}:trained", "mnist", "--subset", 200, "--data-root", own["data"])
    assert r.exit_code == 0 and _pct(own["raw"]) in r.output, r.output  # without preprocessing: the raw number


@pytest.mark.parametrize("file", ["net.safetensors", "net.pt"])
def test_eval_weights(own, file):
    r = run("eval", "--model", f"{own['plugin']}:arch", "--weights", own["root"] / file, "--preprocessing", PREP,
            "mnist", "--subset", 200, "--data-root", own["data"])
    assert r.exit_code == 0, r.output
    assert _pct(own["acc"]) in r.output


def test_attack_pretrained_factory(own, tmp_path):
    out = tmp_path / "grid"
    r = run("attack", "--model", f"{own['plugin']}:trained", "--preprocessing", PREP, "mnist", "--attack", "grid",
            "--n", 30, "--param", "angle_steps=5", "--param", "shift_steps=1", "--quiet", "--out", out,
            "--data-root", own["data"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "outcome.json").read_text())[0]
    assert doc["model"]["source"] == "factory" and doc["model"]["preprocessing"] == {"mean": [MEAN], "std": [STD]}
    m = doc["metrics"]
    assert m["robust_accuracy"] <= m["clean_accuracy"] and m["clean_accuracy"] > 0.5


def test_weights_with_registered_architecture_graph(cora_root, tmp_path):
    """A checkpoint's own .safetensors file loaded with --model gcn --weights gives the checkpoint's number."""
    from robustbench_geo.training import fit

    fit("gcn", "cora", epochs=30, seed=0, out=tmp_path / "gcn", data_root=cora_root)
    a = run("eval", tmp_path / "gcn", "cora", "--data-root", cora_root)
    b = run("eval", "--model", "gcn", "--weights", tmp_path / "gcn.safetensors", "cora", "--data-root", cora_root)
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.output.split("clean accuracy")[1] == b.output.split("clean accuracy")[1]
    r = run("attack", "--model", "gcn", "--weights", tmp_path / "gcn.safetensors", "cora", "--attack", "random_edges",
            "--budget", 0.02, "--quiet", "--data-root", cora_root)
    assert r.exit_code == 0 and "robust accuracy" in r.output, r.output
    r = run("attack", "--model", "gcn", "--weights", tmp_path / "gcn.safetensors", "cora", "--attack", "random_edges",
            "--mode", "poisoning", "--data-root", cora_root)
    assert r.exit_code == 2 and "only a checkpoint records" in r.output, r.output


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_inputs(own, tmp):
    """(arguments after `eval`, words expected in the one-line message)."""
    wrong = _arch(hidden=16)
    save_file({k: v.contiguous() for k, v in wrong.state_dict().items()}, str(tmp / "wrong.safetensors"))
    torch.save(_arch(), tmp / "module.pt")  # a whole pickled module
    with open(tmp / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(tmp / "PWNED"), f)
    (tmp / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    plug = f"{own['plugin']}:arch"
    return [
        (["--model", plug, "--weights", tmp / "wrong.safetensors"], "do not match model"),
        (["--model", plug, "--weights", tmp / "module.pt"], "torch.save(model.state_dict(), FILE)"),
        (["--model", plug, "--weights", tmp / "evil.pkl"], "refused"),
        (["--model", plug, "--weights", tmp / "missing.safetensors"], "not found"),
        (["--model", f"{tmp / 'nope.py'}:f"], "not found"),
        (["--model", f"{tmp / 'raises.py'}:f"], "RuntimeError: boom at import"),
        (["--model", "cnn"], "would be untrained"),
        (["--weights", tmp / "wrong.safetensors"], "expected CHECKPOINT DATASET"),
        (["--model", plug, "--preprocessing", "mean=0.1"], "expected keys mean and std"),
        (["--model", plug, "--preprocessing", "mean=0.1,std=0"], "std: expected positive values"),
    ]


def test_bad_input_is_one_line_exit_2(own, tmp_path):
    for args, words in _bad_inputs(own, tmp_path):
        r = run("eval", *args, "mnist", "--subset", 10, "--data-root", own["data"])
        assert r.exit_code == 2, (args, r.output)
        assert words in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "PWNED").exists()  # the pickle's payload never ran


def test_checkpoint_metadata_never_imports_a_plugin(own, tmp_path, monkeypatch):
    """A checkpoint whose JSON names a plug-in file: not imported unless --model names that same file."""
    from robustbench_geo.checkpoint import save_checkpoint

    marker = tmp_path / "IMPORTED"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + PLUGIN.format(weights=str(own["root"] / "net.pt")))
    save_checkpoint(tmp_path / "ck", _arch(), {"model": f"{evil}:arch", "model_kwargs": {}, "task": "image"})
    for extra in ([], ["--model", f"{own['plugin']}:arch"]):  # none, or another plug-in
        r = run("eval", tmp_path / "ck", "mnist", "--subset", 10, "--data-root", own["data"], *extra)
        assert r.exit_code == 2, r.output
        assert f"--model {evil}:arch" in r.output and "never does on its own" in r.output
        assert not marker.exists()
    r = run("attack", tmp_path / "ck", "mnist", "--attack", "grid", "--n", 4, "--data-root", own["data"])
    assert r.exit_code == 2 and not marker.exists(), r.output
    # named explicitly (here through a relative path to the same file): the user's choice, so it runs
    monkeypatch.chdir(tmp_path)
    r = run("eval", "ck", "mnist", "--subset", 10, "--data-root", own["data"], "--model", "./evil.py:arch")
    assert r.exit_code == 0 and marker.exists(), r.output
