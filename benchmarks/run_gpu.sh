#!/usr/bin/env bash
# The training-step and end-to-end benchmarks on one GPU, in under about 9 minutes, into ONE JSON.
#
#   bash benchmarks/run_gpu.sh            # on the GPU machine, from anywhere in the repository
#   bash benchmarks/run_gpu.sh --smoke    # the same plumbing on a CPU with tiny settings (seconds)
#
# Needs: the repository, a Python with CUDA torch and this project's dependencies (.venv/ is used
# when present, else python3; the wheels in .whl/ that benchmarks/gpu_wheels.sh downloads are
# installed first when present), and for the end-to-end run the sample video in
# .cache/sample_videos/bikes.mp4 (no internet is needed when it is there). On a machine reached
# through the device tool: carry `.whl` and `.cache/sample_videos`.
# Writes $OUT/gpu_results.json, or benchmarks/results/gpu_results.json when OUT is unset.
# Runs, most important first, each with its own timeout and within a total budget
# (BENCH_BUDGET_S, default 530 s); a failed or timed-out run is recorded and the next one runs:
#   step_b16        bench_step.py, reference recipe, batch 16, bf16, no compile, with the loop
#                   formulation (5 timed steps) and the one-step equivalence check
#   e2e_b16         bench_end_to_end.py, batch 16, bf16, 8 loader workers
#   step_b64        bench_step.py, batch 64, bf16, no compile (no loop formulation)
#   step_b16_loopref  batch 16 against the reference-like loop: one student call per object and
#                   frame, explicit attention in every block (3 timed loop steps)
#   step_b16_compile, step_b64_compile   the same with both backbones compiled (the recipe's compile key)
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; fi

OUT_DIR="${OUT:-$REPO/benchmarks/results}"
mkdir -p "$OUT_DIR"
RESULT="$OUT_DIR/gpu_results.json"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dora-gpu-bench.XXXXXX")"
BUDGET_S="${BENCH_BUDGET_S:-530}"
START_S=$(date +%s)

if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3)"; fi
# Wheels made by benchmarks/gpu_wheels.sh (what the GPU image lacks), installed into a temporary
# folder that comes before the image's own packages.
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        "$REPO"/.whl/*.whl >"$WORK/wheels.log" 2>&1; then
        export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
        echo "installed $(ls "$REPO"/.whl/*.whl | wc -l) wheels from .whl into $WORK/site"
    else
        echo "could not install the wheels in .whl (see below); going on with $PY's own packages" >&2
        tail -n 5 "$WORK/wheels.log" >&2
    fi
fi
# The source tree first, so an editable install made at another path does not matter.
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false

echo "python: $PY"
"$PY" - <<'EOF' 2>&1 | tee "$WORK/environment.log"
import os, platform, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", torch.cuda.get_device_name(0), f"{p.total_memory / 2**30:.1f} GiB")
print("cpus", len(os.sched_getaffinity(0)), platform.platform(), "python", platform.python_version())
from importlib import metadata
for name in ("transformers", "huggingface_hub", "accelerate", "datasets", "pyarrow", "av", "safetensors"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "MISSING")
import dora_hf
print("dora_hf from", os.path.dirname(dora_hf.__file__))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee -a "$WORK/environment.log"

if [ "$SMOKE" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to $PY: nothing measured (use --smoke to test this script on a CPU)" >&2
fi

# Sample video for the end-to-end run (never downloaded here unless it is missing).
VIDEO="$REPO/.cache/sample_videos/bikes.mp4"
if [ ! -f "$VIDEO" ]; then
    timeout 60 "$PY" -c "from dora_hf.demo.sample_video import get_sample_video; get_sample_video('$REPO/.cache/sample_videos')" \
        >"$WORK/sample_video.log" 2>&1 || true
fi

RUNS=()
run() {  # run NAME TIMEOUT_S COMMAND...: one benchmark, its JSON in $WORK/NAME.json
    local name="$1" limit="$2"
    shift 2
    local now left
    now=$(date +%s)
    left=$((BUDGET_S - (now - START_S)))
    if [ "$left" -lt 30 ]; then
        echo "== $name: skipped, the time budget is spent" | tee "$WORK/$name.log"
        echo "skipped" >"$WORK/$name.status"
        RUNS+=("$name")
        return
    fi
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    echo "== $name (timeout ${limit} s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" --json "$WORK/$name.json" >"$WORK/$name.log" 2>&1
    local code=$?
    echo "$code $((SECONDS - t0)) $limit" >"$WORK/$name.status"
    tail -n 25 "$WORK/$name.log"
    echo "== $name: exit $code after $((SECONDS - t0)) s"
    RUNS+=("$name")
}

STEP=("$PY" benchmarks/bench_step.py)
E2E=("$PY" benchmarks/bench_end_to_end.py)
if [ "$SMOKE" = 1 ]; then
    run step_b16 120 "${STEP[@]}" --tiny --device cpu --steps 2 --warmup 1 --loop-steps 1 --breakdown-steps 1 --check
    run e2e_b16 120 "${E2E[@]}" --tiny --device cpu --steps 2 --warmup 1 --loader-batches 2
    run step_b64 120 "${STEP[@]}" --tiny --device cpu --batch 8 --steps 2 --warmup 1 --loop-steps 0 --breakdown-steps 0
else
    run step_b16 150 "${STEP[@]}" --batch 16 --precision bf16 --no-compile --steps 20 --warmup 3 --loop-steps 5 --breakdown-steps 5 --check --op-profile 2
    if [ -f "$VIDEO" ]; then
        run e2e_b16 150 "${E2E[@]}" --batch 16 --precision bf16 --num-workers 8 --steps 30 --warmup 5 --loader-batches 30 --video "$VIDEO"
    else
        echo "== e2e_b16: skipped, $VIDEO is missing (carry .cache/sample_videos to the GPU machine)" | tee "$WORK/e2e_b16.log"
        echo "skipped" >"$WORK/e2e_b16.status"
        RUNS+=("e2e_b16")
    fi
    run step_b64 120 "${STEP[@]}" --batch 64 --precision bf16 --no-compile --steps 10 --warmup 2 --loop-steps 0 --breakdown-steps 3
    run step_b16_loopref 100 "${STEP[@]}" --batch 16 --precision bf16 --no-compile --steps 5 --warmup 2 --loop-steps 3 \
        --breakdown-steps 0 --loop-granularity frame --loop-attention eager
    run step_b16_compile 200 env TORCH_LOGS=recompiles "${STEP[@]}" --batch 16 --precision bf16 --compile --steps 20 --warmup 3 --loop-steps 0 --breakdown-steps 5
    run step_b64_compile 200 env TORCH_LOGS=recompiles "${STEP[@]}" --batch 64 --precision bf16 --compile --steps 10 --warmup 3 --loop-steps 0 --breakdown-steps 3
fi

# One JSON: every run's figures (or why there are none) and the tail of its log.
"$PY" - "$WORK" "$RESULT" "$SMOKE" "${RUNS[@]}" <<'EOF'
import json, sys, time
from pathlib import Path
work, result, smoke, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
out = {
    "smoke_test_on_cpu": smoke,
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "environment": (work / "environment.log").read_text() if (work / "environment.log").exists() else "",
    "runs": {},
}
for name in names:
    status = (work / f"{name}.status").read_text().split() if (work / f"{name}.status").exists() else ["missing"]
    log = (work / f"{name}.log").read_text(errors="replace") if (work / f"{name}.log").exists() else ""
    entry = {"status": "skipped" if status[0] == "skipped" else "ran", "log_tail": log.splitlines()[-40:]}
    if status[0] != "skipped" and len(status) == 3:
        code, seconds, limit = map(int, status)
        entry.update(exit_code=code, seconds=seconds, timeout_s=limit, timed_out=code in (124, 137))
    figures = work / f"{name}.json"
    entry["result"] = json.loads(figures.read_text()) if figures.exists() else None
    out["runs"][name] = entry
summary = {}
for name, entry in out["runs"].items():
    r = entry.get("result") or {}
    if "batched" in r:
        summary[name] = {
            "clips_per_s_excl_views": r["batched"]["excl_views"]["clips_per_s"],
            "clips_per_s_incl_views": r["batched"]["incl_views"]["clips_per_s"],
            "tflops": r["batched"]["excl_views"]["tflops"],
            "fraction_of_peak": r["batched"]["excl_views"].get("fraction_of_peak"),
            "peak_memory": r["batched"]["excl_views"].get("memory"),
            "tracking_head_share": (r["batched"].get("breakdown") or {}).get("tracking_head_share"),
            "speedup_vs_loop": r.get("speedup"),
            "compile": r.get("compile"),
            "error": r.get("error"),
        }
    elif "free_running" in r:
        summary[name] = {
            "clips_per_s": r["free_running"]["clips_per_s"],
            "device_waits_on_data": r.get("device_waits_on_data"),
            "data_wait_share_synchronised": (r.get("synchronised") or r["free_running"])["data_wait_share"],
            "loader_only_clips_per_s": (r.get("loader_only") or {}).get("clips_per_s"),
            "error": r.get("error"),
        }
    elif r.get("error"):
        summary[name] = {"error": r["error"]}
out["summary"] = summary
result.write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(summary, indent=2))
print(f"wrote {result}")
EOF
rm -rf "$WORK"
echo "total $(( $(date +%s) - START_S )) s"
