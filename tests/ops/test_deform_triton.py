"""The ``triton`` backend: its kernels in Triton's CPU interpreter (a subprocess) and its dispatch.

Triton decides when it is imported (and ``import torch`` imports it) whether ``@triton.jit``
kernels are compiled or interpreted, so the interpreter cases
(``tests/ops/triton_interpreter_cases.py``) run in a fresh interpreter with ``TRITON_INTERPRET=1``;
this process, and every other test in it, keeps Triton's normal mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (it ships with PyTorch on Linux x86_64 only)")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from robustbench_geo.ops import _deform_triton_kernels as kernels  # noqa: E402
from robustbench_geo.ops import deform_conv2d, resolve_backend  # noqa: E402
from robustbench_geo.ops._deform_triton import Tiles, interpreter_enabled  # noqa: E402
from tests.ops.test_deform_conv import CASES, _inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_kernels_in_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops/triton_interpreter_cases.py"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"interpreter cases failed:\n{tail}"
    assert " passed" in tail and "skipped" not in tail, tail


@pytest.mark.skipif(interpreter_enabled(), reason="this process runs Triton's interpreter")
@pytest.mark.parametrize("dtype, block", [("fp32", (64, 32, 32)), ("fp64", (32, 32, 16))])
def test_kernels_compile_for_a_gpu_without_one(dtype, block):
    """Ahead-of-time compilation to an sm_90 cubin (Triton bundles ptxas): catches what the interpreter
    does not check (types of loop-carried values, dot shapes, precisions and accumulator dtypes, shared
    memory), for both dtypes the backend takes, with each dtype's default tiles. The first H200 session
    (triton 3.6) refused every float64 kernel: tl.dot's result dtype defaulted to float32 against a float64
    accumulator, which the interpreter and triton 3.8 accept."""
    tiles = dict(PRECISION="ieee", BLOCK_M=block[0], BLOCK_N=block[1], BLOCK_K=block[2], HAS_MASK=True)
    for fn, flags in ((kernels.deform_fwd_kernel, dict(HAS_BIAS=True)),
                      (kernels.deform_bwd_data_kernel, dict(NEED_INPUT=True, NEED_POINT=True)),
                      (kernels.deform_bwd_weight_kernel, {})):
        consts = {**tiles, **flags}
        sig = {a: "constexpr" if a in consts else f"*{dtype}" if a.endswith("_ptr") else "i32" for a in fn.arg_names}
        compiled = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32))
        assert compiled.metadata.shared <= 228 * 1024, (fn.__name__, compiled.metadata.shared)  # H100/H200 limit


def test_every_dot_states_its_accumulator_dtype():
    """triton 3.6 (the GPU machine's) asserts that tl.dot's out_dtype, float32 unless given, equals the
    accumulator's; the installed triton may not, so the source is checked: every tl.dot names out_dtype."""
    import inspect
    import re

    src = inspect.getsource(kernels)
    dots = re.findall(r"tl\.dot\(([^\n]*)\)", src)
    assert dots and all("out_dtype=" in d for d in dots), dots


@pytest.mark.skipif(interpreter_enabled(), reason="this process runs Triton's interpreter")
def test_cpu_tensors_need_the_interpreter():
    args = _inputs(CASES["plain3x3"], torch.float32)
    with pytest.raises(RuntimeError, match="backend='triton' runs on CUDA tensors, got cpu tensors.*TRITON_INTERPRET=1"):
        deform_conv2d(**args, backend="triton")


def test_auto_keeps_torchvision_on_cuda_where_triton_measured_slower():
    assert resolve_backend("auto", "cuda") == "torchvision"
    assert resolve_backend("auto", "cpu") in ("native", "torchvision")
    assert resolve_backend("triton", "cuda") == "triton"


def test_tile_sizes_are_checked():
    assert Tiles(16, 32, 64, weight_rows=48).block_n == 32
    with pytest.raises(ValueError, match=r"expected powers of two >= 16 \(tl.dot's minimum\), got \(16, 8, 16\)"):
        Tiles(16, 8, 16)
    with pytest.raises(ValueError, match="expected weight_rows a positive multiple of block_m=32, got 48"):
        Tiles(32, 32, 32, weight_rows=48)
