#!/usr/bin/env bash
# The first run on a GPU, in one script (budget: under 8 minutes on one GPU).
#
#   bash benchmarks/gpu_acceptance.sh            # on a CUDA machine, after the README's install
#   DEVICE=cpu MODELS=resnet20 STEPS=4 bash benchmarks/gpu_acceptance.sh   # the same steps on CPU: a smoke check
#
# 1. the CUDA tests (pytest -m cuda: profile, K = 1 execute + resume + memory, two NCCL ranks on every
#    schedule where two GPUs exist), 2. CUDA-event profiles of resnet20/56/110 at batch 128 (written
#    under benchmarks/results/gpu/profiles/ with their fingerprints), 3. K = 1 execute of each with a
#    checkpoint and a resume (bit-identical final weights), its predicted vs measured step time and
#    peak memory. Everything it measured goes to benchmarks/results/gpu/ (OUT=...), summary.csv first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-"resnet20 resnet56 resnet110"}
BATCH=${BATCH:-128}
STEPS=${STEPS:-20}
OUT=${OUT:-benchmarks/results/gpu}
BACKEND=$([ "$DEVICE" = cuda ] && echo nccl || echo gloo)
mkdir -p "$OUT/profiles" "$OUT/runs"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count(), 'GPU(s)', torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/machine.txt"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/machine.txt" || true
  "$PY" -m pytest -q -m cuda tests/test_cuda.py tests/test_profiler.py 2>&1 | tee "$OUT/cuda-tests.txt"
fi

echo "model,K,steps,predicted_ms,measured_ms,error_pct,predicted_mib,measured_mib,resume_bit_identical" > "$OUT/summary.csv"
for MODEL in $MODELS; do
  PROF="$OUT/profiles/$MODEL-b$BATCH-$DEVICE.json"
  "$PY" -m ddgsim profile "$MODEL" --batch-size "$BATCH" --device "$DEVICE" --reps 5 --no-cache --no-progress \
      --out "$PROF" 2>&1 | tee "$OUT/profiles/$MODEL.txt"
  PLAN="$OUT/runs/$MODEL-k1.plan.json"
  "$PY" -m ddgsim plan --profile "$PROF" --gpus 1 --stages 1 --replicas 1 --schedule bp --out "$PLAN" > /dev/null
  RUN="$OUT/runs/$MODEL-k1"
  rm -rf "$RUN"; mkdir -p "$RUN"
  common=(--data synthetic --no-eval --no-progress --backend "$BACKEND" --seed 1)
  "$PY" -m ddgsim execute "$PLAN" --steps "$STEPS" "${common[@]}" --metrics "$RUN/metrics.json" \
      --final-weights "$RUN/whole" --log-dir "$RUN/logs"
  half=$((STEPS / 2))
  "$PY" -m ddgsim execute "$PLAN" --steps "$half" "${common[@]}" --checkpoint-dir "$RUN/ck" \
      --checkpoint-every "$half" --log-dir "$RUN/logs-a"
  "$PY" -m ddgsim execute "$PLAN" --steps "$STEPS" "${common[@]}" --resume "$RUN/ck" \
      --final-weights "$RUN/resumed" --log-dir "$RUN/logs-b"
  "$PY" - "$MODEL" "$RUN" "$STEPS" >> "$OUT/summary.csv" <<'EOF'
import json, sys
from pathlib import Path
import torch
model, run, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
m = json.loads((run / "metrics.json").read_text())
measured = m["summary"]["median_step_ms"]  # the executor's own figure (as `execute` prints it)
predicted = m["predicted"]["iteration_ms"]
a = torch.load(run / "whole" / "stage-0.pt", weights_only=True)["weights"]
b = torch.load(run / "resumed" / "stage-0.pt", weights_only=True)["weights"]
mem = m["per_stage"][0].get("peak_memory_bytes") or 0
print(f"{model},1,{steps},{predicted:.3f},{measured:.3f},{100 * (predicted - measured) / measured:.1f},"
      f"{m['predicted']['peak_memory_bytes'][0] / 2**20:.1f},{mem / 2**20:.1f},{torch.equal(a, b)}")
EOF
done
cat "$OUT/summary.csv"
