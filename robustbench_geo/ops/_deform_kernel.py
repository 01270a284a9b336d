"""Compiled CPU kernels of the native deformable convolution (optional; pure PyTorch otherwise).

``csrc/deform_conv_cpu.cpp`` is plain C++ without torch headers: it compiles in a few seconds with
the system C++ compiler on first use (``c++ -O3 -march=native``), is cached under
``$RBGEO_CACHE/kernels`` (else ``~/.cache/robustbench_geo/kernels``) keyed by the source, the
compiler and the CPU, and is called through :mod:`ctypes` on raw pointers. ctypes releases the
GIL, so the rows are split over ``torch.get_num_threads()`` Python threads. Nothing is compiled
at import time. Without a compiler (or with ``RBGEO_NATIVE_KERNEL=torch``) :func:`load` returns
None and the native backend uses its pure-PyTorch path, which computes the same function (tests
compare both against torchvision).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("csrc") / "deform_conv_cpu.cpp"
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC", "-std=c++17"]
_lock = threading.Lock()
_state: dict = {}


def _cpu_tag() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor()


def _build(compiler: str) -> Path:
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([compiler, *_FLAGS, platform.machine(), _cpu_tag()]).encode()).hexdigest()[:16]
    root = Path(os.environ.get("RBGEO_CACHE") or "~/.cache/robustbench_geo").expanduser() / "kernels"
    lib = root / f"deform_conv_cpu_{key}.so"
    if lib.exists() and _intact(lib):
        return lib
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=root)
    os.close(fd)
    try:
        subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", tmp], check=True, capture_output=True, text=True, timeout=300)
        _stamp(Path(tmp)).replace(_stamp_path(lib))  # the stamp first: a library without one is rebuilt
        os.replace(tmp, lib)  # atomic: concurrent builders never see a partial file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return lib


def _stamp_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _digest(path: Path) -> str:
    return f"{path.stat().st_size} {hashlib.sha256(path.read_bytes()).hexdigest()}"


def _stamp(lib: Path) -> Path:
    """Write a new temporary file next to ``lib`` holding its size and SHA-256 (unique per builder:
    parallel sweep workers may build at once, and a shared name lost one builder's rename)."""
    fd, tmp = tempfile.mkstemp(suffix=".sha256.tmp", dir=lib.parent)
    with os.fdopen(fd, "w") as f:
        f.write(_digest(lib) + "\n")
    return Path(tmp)


def _intact(lib: Path) -> bool:
    """Whether a cached library is a regular file with the size and hash recorded when it was built.

    Loading a truncated or overwritten shared object can crash the process with SIGBUS, with no
    message; a mismatch instead removes the file so it is rebuilt.
    """
    stamp = _stamp_path(lib)
    try:
        ok = lib.is_file() and stamp.read_text().strip() == _digest(lib)
    except OSError:
        ok = False
    if not ok:
        warnings.warn(f"deformable convolution: cached kernel {lib} does not match its build record "
                      f"({stamp.name}); rebuilding it", RuntimeWarning, stacklevel=4)
        for p in (lib, stamp):
            try:
                p.unlink()
            except OSError:
                pass
    return ok


def load():
    """The compiled kernel library, building it on first call; None where it cannot be had."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib = None
        mode = os.environ.get("RBGEO_NATIVE_KERNEL", "auto")
        compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        if mode != "torch" and compiler:
            try:
                lib = ctypes.CDLL(str(_build(compiler)))
                if lib.rbgeo_dcn_abi_version() != 1:
                    lib = None
            except (OSError, subprocess.SubprocessError, AttributeError) as err:
                detail = getattr(err, "stderr", "") or err
                warnings.warn(f"deformable convolution: compiling the CPU kernel failed, using the slower pure-PyTorch "
                              f"path ({str(detail).strip()[:300]})", RuntimeWarning, stacklevel=3)
                lib = None
        for name in ("rbgeo_dcn_columns_f32", "rbgeo_dcn_columns_f64", "rbgeo_dcn_backward_f32", "rbgeo_dcn_backward_f64"):
            if lib is not None:
                getattr(lib, name).restype = None
        _state["lib"] = lib
        return lib


def available() -> bool:
    """Whether the compiled CPU kernels can be used (builds them on first call)."""
    return load() is not None


def _pool() -> ThreadPoolExecutor:
    n = max(1, torch.get_num_threads())
    pool = _state.get("pool")
    if pool is not None and _state.get("pool_pid") != os.getpid():
        pool = None  # a forked child inherits the pool object but not its threads
    if pool is None or _state.get("pool_size") != n:
        if pool is not None:
            pool.shutdown(wait=False)
        pool = _state["pool"] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="rbgeo-dcn")
        _state["pool_size"], _state["pool_pid"] = n, os.getpid()
    return pool


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _run(jobs) -> None:
    if len(jobs) == 1:
        fn, args = jobs[0]
        fn(*args)
        return
    for f in [_pool().submit(fn, *args) for fn, args in jobs]:
        f.result()


def _split(r0: int, r1: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """Split ``[r0, r1)`` into at most ``parts`` ranges whose inner bounds are multiples of ``align``."""
    first, last = r0 // align, -(-r1 // align)
    units = last - first
    parts = max(1, min(parts, units))
    bounds = [max(r0, min(r1, (first + units * i // parts) * align)) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def params(geo) -> torch.Tensor:
    """The int64 parameter block the kernels read (see ``Geo`` in the C++ source)."""
    return torch.tensor([geo.b, geo.c, geo.h, geo.w, geo.g, geo.kh, geo.kw, *geo.stride, *geo.padding, *geo.dilation,
                         geo.ho, geo.wo, int(geo.has_mask)], dtype=torch.int64)


def columns(src, off, mask, cols, prm, rbase: int, r0: int, r1: int) -> None:
    """Fill ``cols`` (rows ``[rbase, ...)``, K, C) for output rows ``[r0, r1)``; see the C++ source."""
    lib = load()
    fn = lib.rbgeo_dcn_columns_f32 if src.dtype == torch.float32 else lib.rbgeo_dcn_columns_f64
    base = (_ptr(src), _ptr(off), _ptr(mask), _ptr(cols), _ptr(prm), ctypes.c_int64(rbase))
    _run([(fn, base + (ctypes.c_int64(a), ctypes.c_int64(b))) for a, b in _split(r0, r1, torch.get_num_threads())])


def backward(src, off, mask, gcols, grad_src, grad_off, grad_mask, prm, rows_per_image: int, rbase: int, r0: int,
             r1: int) -> None:
    """Offset/mask gradients and the input-gradient scatter for rows ``[r0, r1)`` (threads own whole images)."""
    lib = load()
    fn = lib.rbgeo_dcn_backward_f32 if src.dtype == torch.float32 else lib.rbgeo_dcn_backward_f64
    base = (_ptr(src), _ptr(off), _ptr(mask), _ptr(gcols), _ptr(grad_src), _ptr(grad_off), _ptr(grad_mask), _ptr(prm),
            ctypes.c_int64(rbase))
    align = rows_per_image if grad_src is not None else 1
    _run([(fn, base + (ctypes.c_int64(a), ctypes.c_int64(b))) for a, b in _split(r0, r1, torch.get_num_threads(), align)])
