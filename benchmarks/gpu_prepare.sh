#!/usr/bin/env bash
# Prepare a GPU session on the development machine (no GPU needed): fetch the wheels the GPU machine lacks
# and copy the data the CUDA tests, the quick preset and scaled_mnist read into ignored folders that the
# device call carries. Run from the repository root; see docs/gpu.md.
#
#   bash benchmarks/gpu_prepare.sh            # then, in one device call:
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".gpudata"], timeout_s=600)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
data=${RBGEO_DATA:-../shared/data}
[ -d "$data/MNIST/raw" ] || { echo "expected the data mirror at $data (set RBGEO_DATA), found no MNIST/raw" >&2; exit 2; }

# wheels for the GPU machine's Python 3.12: the versions installed here (they passed the test suite here)
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
for pkg in kornia kornia_rs adversarial-robustness-toolbox; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$pkg==$(version "$pkg")"
done

# data: MNIST (raw), Cora (Planetoid raw, npz, Pro-GNN splits); about 14 MB
mkdir -p .gpudata/MNIST .gpudata/npz .gpudata/prognn .gpudata/Cora
cp -r "$data/MNIST/raw" .gpudata/MNIST/
cp "$data/npz/cora.npz" .gpudata/npz/
cp "$data/prognn/cora_prognn_splits.json" .gpudata/prognn/
cp -r "$data/Cora/raw" .gpudata/Cora/
[ -f "$data/README.md" ] && cp "$data/README.md" .gpudata/
du -sh .whl .gpudata
ls .whl
