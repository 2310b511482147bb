#!/usr/bin/env bash
# The real-size GPU figures in one run (make bench-gpu): on one H100 (or H200) in at most 8 minutes, random
# weights at the real sizes (no weights folder needed), through tools/bench.py:
#   train      tokens/s, MFU (4·N·T / time / peak) and peak memory of LLaMA-2-7B and Qwen2.5-7B backbones,
#              bf16 and bf16 + activation checkpointing (batch 8)
#   eval       closed-set scoring (our protocol only) clips/s and peak memory, batch 16 x 9 labels, both backbones
#   extract    decode + real-size EVA-g/MAE/VideoMAE/HuBERT (random weights) clips/s
#   mem_24gb   the 24 GB recipe's step (batch 1, bf16 + checkpointing, max_length 1024, stage fine): peak memory
#              against the computed figures of BENCHMARKS.md ("One 24 GB card")
# Each step has a time budget (timeout) inside a total budget; a failing or timed-out step is recorded as an
# error and the next one runs. Writes ONE JSON file: {machine, date, dry_run, total_wall_s, steps: [{name,
# command, budget_s, seconds, status, error, results: [bench.py's JSON lines]}]}.
#
#   tools/gpu_check.sh [--dry-run] [out=FILE]        (make bench-gpu [ARGS='--dry-run out=FILE'])
# out: default $OUT/gpu_check.json when $OUT is set, else outputs/gpu_check.json.
# --dry-run (or DRY_RUN=1): the same steps on the CPU with the tiny presets (tiny, tiny_qwen2), few steps and
# clips, in about a minute: checks the script, not the machine.
# Environment: PYTHON (default .venv/bin/python, else python3), PEAK_FLOPS (default 989e12: H100 and H200 bf16
# dense), TOTAL_S (total budget, default 465), WORK_DIR (bench inputs, default outputs/bench_gpu_check).
set -u
cd "$(dirname "$0")/.."

DRY_RUN=${DRY_RUN:-0}
OUT_FILE=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        out=*) OUT_FILE=${arg#out=} ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $arg: use --dry-run and/or out=FILE" >&2; exit 2 ;;
    esac
done
if [ -z "$OUT_FILE" ]; then
    if [ -n "${OUT:-}" ]; then OUT_FILE="$OUT/gpu_check.json"; else OUT_FILE="outputs/gpu_check.json"; fi
fi
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
PEAK=${PEAK_FLOPS:-989e12}
TOTAL=${TOTAL_S:-465}   # each step may run 10 s past its budget before it is killed: under 8 minutes in all
WORK=${WORK_DIR:-outputs/bench_gpu_check}
if [ "$DRY_RUN" = 1 ] && [ -z "${WORK_DIR:-}" ]; then WORK=outputs/bench_gpu_check_dry; fi
mkdir -p "$(dirname "$OUT_FILE")" "$WORK"
STEPS_DIR=$(mktemp -d)
trap 'rm -rf "$STEPS_DIR"' EXIT
START=$(date +%s.%N)
export PYTHONUNBUFFERED=1

if [ "$DRY_RUN" = 1 ]; then
    DEV=cpu; LLAMA=tiny; QWEN=tiny_qwen2; ENC=tiny; PER_LABEL=3; WORKERS=0; THREADS="threads=1"
    TRAIN="variants=[bf16,bf16+ckpt] batch=2 steps=2 warmup=1"
    EVAL="batch=16 original=false min_time=0.2"
    EXTRACT="clips=2 batch=2"
    MEM="variants=[bf16+ckpt] batch=1 steps=1 warmup=1 max_length=1024 stage=fine"
else
    DEV=cuda; LLAMA=emotion_llama_7b; QWEN=emotion_qwen2_5_7b; ENC=emotion_llama_7b; PER_LABEL=4; WORKERS=8; THREADS=""
    TRAIN="variants=[bf16,bf16+ckpt] batch=8 steps=8 warmup=2"
    EVAL="batch=16 original=false min_time=3"
    EXTRACT="batch=4"
    MEM="variants=[bf16+ckpt] batch=1 steps=4 warmup=1 max_length=1024 stage=fine"
fi
COMMON="device=$DEV work_dir=$WORK clips_per_label=$PER_LABEL workers=$WORKERS $THREADS"

n=0
# step NAME BUDGET_S COMMAND...: runs the command under timeout (its budget, at most what is left of the
# total), keeps its stdout's JSON lines and, on failure, its last stderr line.
step() {
    local name=$1 budget=$2; shift 2
    n=$((n + 1))
    local base="$STEPS_DIR/$(printf %02d "$n")_$name"
    local now left
    now=$(date +%s.%N)
    left=$(awk -v t="$TOTAL" -v s="$START" -v n="$now" 'BEGIN { printf "%d", t - (n - s) }')
    [ "$left" -lt "$budget" ] && budget=$left
    printf '%s\n' "$*" > "$base.cmd"
    echo "$budget" > "$base.budget"
    if [ "$budget" -lt 10 ]; then
        echo "skipped: the total budget of ${TOTAL} s was spent" > "$base.err"
        echo skipped > "$base.rc"; echo 0 > "$base.seconds"
        echo "gpu_check: $name skipped (total budget spent)" >&2
        return
    fi
    echo "gpu_check: $name (at most ${budget} s): $*" >&2
    local t0 t1 rc
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$budget" "$@" > "$base.out" 2> "$base.err"
    rc=$?
    t1=$(date +%s.%N)
    echo "$rc" > "$base.rc"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' > "$base.seconds"
    echo "gpu_check: $name rc=$rc in $(cat "$base.seconds") s" >&2
}

step prepare 90 "$PY" -c "
import sys; sys.path.insert(0, 'tools')
from pathlib import Path
from bench import prepare_set, preset_config
bset = prepare_set(None, Path('$WORK'), $PER_LABEL, $WORKERS, preset_config('tiny'))
print('{\"mode\": \"prepare\", \"train_clips\": %d, \"test_clips\": %d}' % (len(bset.names('train')), len(bset.names('test'))))
"
step train_llama2_7b 100 "$PY" tools/bench.py train model=$LLAMA $COMMON $TRAIN peak_flops=$PEAK
step train_qwen2_5_7b 100 "$PY" tools/bench.py train model=$QWEN $COMMON $TRAIN peak_flops=$PEAK
step eval_llama2_7b 50 "$PY" tools/bench.py eval model=$LLAMA $COMMON $EVAL
step eval_qwen2_5_7b 50 "$PY" tools/bench.py eval model=$QWEN $COMMON $EVAL
step extract_real_encoders 90 "$PY" tools/bench.py extract model=$ENC $COMMON $EXTRACT
step mem_24gb_llama2_7b 60 "$PY" tools/bench.py train model=$LLAMA $COMMON $MEM peak_flops=$PEAK
step mem_24gb_qwen2_5_7b 60 "$PY" tools/bench.py train model=$QWEN $COMMON $MEM peak_flops=$PEAK

END=$(date +%s.%N)
"$PY" - "$STEPS_DIR" "$OUT_FILE" "$DRY_RUN" "$START" "$END" "$TOTAL" <<'PYEOF'
import datetime, json, os, platform, subprocess, sys
from pathlib import Path

steps_dir, out_file, dry_run, start, end, total = sys.argv[1:]
steps = []
for cmd in sorted(Path(steps_dir).glob("*.cmd")):
    base = cmd.with_suffix("")
    read = lambda ext: base.with_suffix(ext).read_text(errors="replace") if base.with_suffix(ext).is_file() else ""
    rc = read(".rc").strip()
    results, bad = [], []
    for line in read(".out").splitlines():
        if line.startswith("{"):
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                bad.append(line[:200])
    err_lines = [l for l in read(".err").splitlines() if l.strip()]
    status = {"0": "ok", "124": "timeout", "137": "timeout", "skipped": "skipped"}.get(rc, "error")
    if status == "ok" and not results:
        status = "error"
    error = None
    if status == "timeout":
        error = f"timed out after {read('.budget').strip()} s" + (f" (last line: {err_lines[-1][:300]})" if err_lines else "")
    elif status != "ok":
        error = err_lines[-1][:500] if err_lines else f"exit code {rc}, no output"
    steps.append({"name": base.name.split("_", 1)[1], "command": read(".cmd").strip(),
                  "budget_s": int(read(".budget").strip() or 0), "seconds": float(read(".seconds").strip() or 0),
                  "status": status, "rc": None if rc == "skipped" else int(rc) if rc.lstrip("-").isdigit() else rc,
                  "error": error, "results": results, **({"unparsed": bad} if bad else {})})

def gpu():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None

cpu = platform.processor() or platform.machine()
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
machines = [r["machine"] for s in steps for r in s["results"] if "machine" in r]
report = {
    "tool": "tools/gpu_check.sh", "dry_run": dry_run == "1",
    "machine": machines[0] if machines else f"{cpu}, {os.cpu_count()} cores", "gpu": gpu(),
    "host": platform.node(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "total_budget_s": int(total), "total_wall_s": round(float(end) - float(start), 1),
    "ok": all(s["status"] == "ok" for s in steps), "steps": steps,
}
Path(out_file).write_text(json.dumps(report, indent=1) + "\n")
failed = [s["name"] for s in steps if s["status"] != "ok"]
print(f"gpu_check: {len(steps) - len(failed)}/{len(steps)} steps ok in {report['total_wall_s']} s"
      + (f" (not ok: {', '.join(failed)})" if failed else "") + f"; wrote {Path(out_file).resolve()}")
PYEOF
