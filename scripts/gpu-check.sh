#!/usr/bin/env bash
# The one prepared GPU check (issue 13): tests/gpu, the GPU serving bench and the training-memory table, run once,
# end to end, leaving everything behind under $OUT (default out/gpu):
#
#   environment.json     torch / CUDA / GPU / nvidia-smi
#   tests-gpu.xml        JUnit report of tests/gpu
#   bench.json           sigstream bench --device cuda (serving: texts/s, memory, p50/p99 of a 64-text micro-batch)
#   training-memory.json sigstream bench --device cuda --training-memory (LoRA, 16-bit LoRA, QLoRA, full)
#   summary.json         each step's exit status and seconds; the files above
#   gpu-check.log        everything the steps printed
#
# A step that fails or runs out of time does not stop the next one (GPU time is scarce); the exit status is 1 if any
# step failed. Each step has its own time limit (30 + 160 + 190 + 90 s = 7 min 50 s at most on the GPU; three
# times that in a dry run, where a shared CPU may be slow).
#
# Usage: scripts/gpu-check.sh [--dry-run] [--out DIR]
#   --dry-run (or --cpu-smoke)  run the same steps on CPU at toy sizes, to test this script without a GPU
#   --out DIR                   where to write (default: $OUT, else out/gpu)
# Example: OUT=out/gpu-h200 scripts/gpu-check.sh
set -uo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

dry_run=0
out_dir="${OUT:-out/gpu}"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run | --cpu-smoke) dry_run=1 ;;
        --out)
            [ $# -ge 2 ] || { echo "error: --out needs a directory" >&2; exit 2; }
            out_dir="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
mkdir -p "$out_dir" || exit 1
out_dir="$(cd "$out_dir" && pwd)"
log="$out_dir/gpu-check.log"
steps="$out_dir/steps.tsv"
: >"$log"
: >"$steps"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if [ "$dry_run" = 1 ]; then
    bench_flags=(--cpu-smoke)
    scale=3
else
    bench_flags=(--device cuda)
    scale=1
fi

# step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, its output to the log, its status to steps.tsv.
step() {
    local name="$1" limit=$(($2 * scale))
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
    local start end rc
    start=$(date +%s%N)
    timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    end=$(date +%s%N)
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(((end - start) / 1000000))" "$limit" >>"$steps"
    echo "=== $name: exit $rc" | tee -a "$log"
}

started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
step environment 30 "$py" - "$out_dir/environment.json" <<'PY'
import json, platform, shutil, subprocess, sys
import torch
info = {"python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
if shutil.which("nvidia-smi"):
    info["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False).stdout
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=2)
print(json.dumps({k: v for k, v in info.items() if k != "nvidia_smi"}))
PY
step tests-gpu 160 "$py" -m pytest tests/gpu -q -p no:cacheprovider --junitxml="$out_dir/tests-gpu.xml"
step bench 190 "$py" -m sigstream.cli bench "${bench_flags[@]}" --out "$out_dir/bench.json"
step training-memory 90 "$py" -m sigstream.cli bench "${bench_flags[@]}" --training-memory \
    --out "$out_dir/training-memory.json"

"$py" - "$out_dir" "$started" "$dry_run" <<'PY'
import datetime, json, pathlib, sys
out, started, dry = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, ms, limit = line.split("\t")
    steps.append({"name": name, "rc": int(rc), "seconds": round(int(ms) / 1000, 1), "limit_s": int(limit),
                  "timed_out": int(rc) in (124, 137)})
summary = {"dry_run": dry, "started": started,
           "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "seconds": round(sum(s["seconds"] for s in steps), 1), "ok": all(s["rc"] == 0 for s in steps),
           "steps": steps, "files": sorted(p.name for p in out.iterdir() if p.is_file())}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: summary[k] for k in ("ok", "seconds", "dry_run")}))
sys.exit(0 if summary["ok"] else 1)
PY
