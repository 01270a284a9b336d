"""Image-only commands never load torch_geometric, and other libraries' deprecation notices stay out of the terminal.

Each check runs in a fresh interpreter: ``sys.modules`` and the warning filters of the test process
say nothing about what a command imports or prints.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from robustbench_geo.models import create_model

_RUN = """
import sys
from robustbench_geo.cli import main
try:
    main({args!r}, standalone_mode=False)
except SystemExit as e:
    assert not e.code, e.code
print("torch_geometric loaded:", "torch_geometric" in sys.modules)
"""


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def _command(*args, flags=()) -> subprocess.CompletedProcess:
    r = _python(_RUN.format(args=[str(a) for a in args]), *flags)
    assert r.returncode == 0, r.stderr
    return r


def test_listing_does_not_import_torch_geometric():
    for what in ("models", "attacks", "datasets", "threat-models"):
        assert "torch_geometric loaded: False" in _command("list", what).stdout, what


def test_image_eval_and_attack_do_not_import_torch_geometric(mnist_root, tmp_path):
    weights = tmp_path / "cnn.pt"
    torch.manual_seed(0)
    torch.save(create_model("cnn", in_channels=1, num_classes=10, image_size=(28, 28)).state_dict(), weights)
    common = ("--model", "cnn", "--weights", weights, "mnist", "--data-root", mnist_root)
    r = _command("eval", *common, "--subset", 8)
    assert "clean accuracy" in r.stdout and "torch_geometric loaded: False" in r.stdout
    r = _command("attack", *common, "--attack", "grid", "--n", 8, "--quiet")
    assert "robust accuracy" in r.stdout and "torch_geometric loaded: False" in r.stdout


def test_graph_import_after_a_command_prints_no_library_deprecation():
    # torch_geometric's import triggers torch's FutureWarning on torch.jit.script (with -W default it shows)
    plain = _python("import torch_geometric", "-W", "default")
    r = _python(_RUN.format(args=["list", "datasets"]) + textwrap.dedent("""
        import warnings
        import torch_geometric
        warnings.warn_explicit("own notice", FutureWarning, "x.py", 1, module="robustbench_geo.x")
        warnings.warn_explicit("a library's user warning", UserWarning, "y.py", 1, module="torch.y")
    """), "-W", "default")
    assert r.returncode == 0, r.stderr
    assert "FutureWarning" in plain.stderr and "torch.jit.script" in plain.stderr  # the library does warn
    assert "torch.jit.script" not in r.stderr
    assert "own notice" in r.stderr and "a library's user warning" in r.stderr  # other warnings still show
