#!/usr/bin/env bash
# Everything a GPU session measures, in one device call (docs/gpu.md). Run from the repository root on the
# GPU machine after benchmarks/gpu_prepare.sh ran here:
#
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".gpudata"], timeout_s=600)
#   run(command="bash benchmarks/gpu_session.sh scaled", ...)      # only some steps
#
# Steps (default: all, in this order; each gets what is left of GPU_BUDGET_S, default 540 s, capped per step):
#   env     GPU, driver, versions
#   tests   python -m pytest tests/test_cuda.py (compiled triton kernels, CUDA attacks, tiny CUDA sweep)
#   bench   benchmarks/deform_conv.py --device cuda --reps 20 --json (issue 13's table)
#   sweep   the quick preset with device = "cuda" (all cells must be done, none failed)
#   tune    the issue shapes with --tf32, then triton alone on the two large shapes with a few tile sizes
#   scaled  benchmarks/scaled_mnist.py --device cuda --json (60k images, 10 epochs, full test sets); SCALED_ARGS adds
#           arguments, e.g. "--protocols fair --seeds 1,2 --jobs 2 --runs-dir $OUT/scaled" (each seed kept as it ends)
#   wo10    worst-of-10 training (5 epochs x 60k, cosine, seed 0) of WO10_MODELS (cnn deform_cnn p4cnn p4cnn_eq) side
#           by side, each attacked with the 775-point grid on WO10_N (2000) test images; table and runs in $OUT/wo10.tgz
#   wait    wait for the steps started in the background
# A step written +NAME runs in the background (its output in $OUT/NAME.log) while the next steps run; `wait`
# (or the end of the script) waits for it. Steps that time kernels (bench, tune) belong after a `wait`.
# Everything is teed to $OUT (at most 8 files come back): session.log, deform_conv.json, tune.jsonl (the --tf32
# run, then one line per tile size), quick_cuda_summary.md, quick_cuda_results.csv, scaled_mnist.json, NAME.log of
# background steps, wo10.tgz.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # this tree's package (it is not pip-installed there)
export RBGEO_DATA=${RBGEO_DATA:-$PWD/.gpudata} RBGEO_CACHE=${RBGEO_CACHE:-/tmp/rbgeo-cache}
mkdir -p "$RBGEO_CACHE"
budget=${GPU_BUDGET_S:-540}
steps=${*:-env tests bench sweep tune scaled}
bg=() bg_pids=()  # a bare `wait` would also wait for the tee above, which only ends with the script

step() {  # step NAME CAP COMMAND...: run with the smaller of CAP and the time left, report rc and seconds
    local name=$1 cap=$2 t0=$SECONDS left
    shift 2
    left=$((budget - SECONDS))
    (( left < cap )) && cap=$left
    if (( cap < 20 )); then echo "=== $name: skipped, ${left}s of the budget left"; return; fi
    echo "=== $name (limit ${cap}s): $*"
    timeout --signal=INT --kill-after=10 "$cap" "$@"
    echo "=== $name: rc=$? after $((SECONDS - t0)) s (session ${SECONDS} s)"
}

run_step() {
    local s=$1
    case $s in
    env)
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
        python3 -c "import torch, torchvision, triton; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
        python3 -c "import kornia, art, robustbench_geo; print('kornia', kornia.__version__, 'art', art.__version__, 'robustbench_geo', robustbench_geo.__file__)"
        ;;
    tests)
        step tests 240 python3 -m pytest -q -p no:cacheprovider -rs --durations=15 tests/test_cuda.py
        ;;
    bench)
        step bench 200 sh -c "python3 benchmarks/deform_conv.py --device cuda --reps 20 --json > '$OUT/deform_conv.json'"
        python3 - "$OUT/deform_conv.json" <<'PY' || true
import json, sys
sys.path.insert(0, "benchmarks")
from deform_conv import _fmt_table
res = json.load(open(sys.argv[1]))
print(_fmt_table(res["shapes"], res["meta"]["ops"]))
PY
        ;;
    tune)
        step bench_tf32 120 sh -c "python3 benchmarks/deform_conv.py --device cuda --reps 20 --tf32 --no-model-shapes --json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' >> '$OUT/tune.jsonl'"
        for t in 64,64,32 64,128,32 128,64,32 128,128,32 64,128,64 32,128,32; do
            step "tune $t" 45 sh -c "python3 benchmarks/deform_conv.py --device cuda --large-only --ops triton --tiles $t --reps 10 --json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' >> '$OUT/tune.jsonl'"
        done
        ;;
    sweep)
        sed 's/^\[sweep\]$/[sweep]\ndevice = "cuda"/' robustbench_geo/sweep/presets/quick.toml > /tmp/quick_cuda.toml
        step sweep 300 python3 -m robustbench_geo sweep /tmp/quick_cuda.toml --output /tmp/quick_cuda
        cp /tmp/quick_cuda/summary.md "$OUT/quick_cuda_summary.md" 2>/dev/null || true
        cp /tmp/quick_cuda/results.csv "$OUT/quick_cuda_results.csv" 2>/dev/null || true
        ;;
    scaled)
        # SCALED_ARGS, e.g. "--seeds 0,1,2 --jobs 3": the full protocol's three seeds side by side on one GPU
        step scaled 600 sh -c "python3 benchmarks/scaled_mnist.py --device cuda --json ${SCALED_ARGS:-} > '$OUT/scaled_mnist.json'"
        ;;
    wo10)
        local d=/tmp/wo10 m pids=()
        mkdir -p $d
        for m in ${WO10_MODELS:-cnn deform_cnn p4cnn p4cnn_eq}; do
            ( OMP_NUM_THREADS=2 step "wo10 train $m" 420 python3 -m robustbench_geo train $m mnist --defense worst_of_k:k=10 \
                  --epochs 5 --schedule cosine --seed 0 --test-subset 10000 --device cuda --quiet --out $d/${m}_wo10
              [ -f $d/${m}_wo10.json ] && OMP_NUM_THREADS=2 step "wo10 grid $m" 240 python3 -m robustbench_geo attack \
                  $d/${m}_wo10 mnist --attack grid --n "${WO10_N:-2000}" --device cuda --quiet --out $d/grid_$m ) &
            pids+=($!)
        done
        wait "${pids[@]}"
        local runs=()
        for m in ${WO10_MODELS:-cnn deform_cnn p4cnn p4cnn_eq}; do [ -d $d/grid_$m ] && runs+=(--run $d/${m}_wo10 $d/grid_$m); done
        (( ${#runs[@]} )) && python3 benchmarks/spatial_defenses.py "${runs[@]}" --train-images 60000
        tar czf "$OUT/wo10.tgz" -C /tmp wo10
        ;;
    wait)
        echo "=== waiting for the background steps: ${bg[*]:-none}"
        (( ${#bg_pids[@]} )) && wait "${bg_pids[@]}"
        echo "=== background steps done (session ${SECONDS} s)"
        bg=() bg_pids=()
        ;;
    *)
        echo "unknown step '$s'; expected some of: env tests bench sweep tune scaled wo10 wait (+NAME: in the background)"
        exit 2
        ;;
    esac
}

for s in $steps; do
    if [[ $s == +* ]]; then
        run_step "${s#+}" > "$OUT/${s#+}.log" 2>&1 &
        bg+=("${s#+}") bg_pids+=($!)
    else
        run_step "$s"
    fi
done
(( ${#bg_pids[@]} )) && wait "${bg_pids[@]}"
echo "=== done in ${SECONDS} s"
