#!/usr/bin/env bash
# GPU check (issue 15): the example's training at 224 px on an NVIDIA GPU, images/s next to the CPU figure.
#
#   bench/gpu_check.sh            # from the repository root, on a machine with an NVIDIA GPU
#   PYTHON=/path/python OUT=/dir bench/gpu_check.sh
#
# Needs: nvidia-smi, and a Python with the trainer (pip install -e trainer) and a CUDA build of TensorFlow
# 2.21 (pip install 'tensorflow[and-cuda]==2.21.0': the trainer image ships tensorflow-cpu). KTO_WHEELS=DIR
# installs the wheels of DIR first (--no-index), for a machine without a package index.
#
# What it does, in about 5 minutes on one GPU:
#   1. the trainer CLI end to end at 224 px on 192 synthetic images (2 epochs, --mixed_precision=true, a local
#      MLflow store): exit 0, and the run's kto.devices tag names the GPU;
#   2. images/s of the trainer's fit at 224 px (512 images, batch 32, 1 untimed + 3 timed epochs), in float32 and
#      in mixed precision (bench/bench_multiworker.py --single);
#   3. those next to the CPU figure: the published one of the 2-core machine (bench/results/results.json,
#      trainer.train_img_s_224) and the brief's "about 9 images/s"; GPU_CHECK_CPU=1 also measures this
#      machine's own CPUs (the GPU hidden).
# Exit code: 0 all done; 3 no GPU visible (nothing measured); anything else: a step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-$(mktemp -d -t gpu-check-XXXXXX)}
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=2 MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1

if [ -n "${KTO_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --find-links "$KTO_WHEELS" 'tensorflow[and-cuda]==2.21.0' -e trainer
fi
if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed): nothing measured" >&2
  exit 3
fi
if ! "$PY" -c '
import sys, tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}, GPUs: {gpus}")
sys.exit(0 if gpus else 1)'; then
  echo "gpu_check: TensorFlow sees no GPU (a CPU-only build? install tensorflow[and-cuda]==2.21.0): nothing measured" >&2
  exit 3
fi

echo "== 1. the trainer end to end at 224 px, mixed precision"
"$PY" -m kto_trainer.dataset_tool --source synthetic --count 192 --size 224 --out "$OUT/data"
MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" MLFLOW_EXPERIMENT_NAME=gpu-check \
  "$PY" -m kto_trainer --image_size=224 --weights=none --epochs=2 --batch_size=32 --mixed_precision=true \
  --working_dir="$OUT/work" --dataset_dir="$OUT/data" | tee "$OUT/trainer.log"
MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" "$PY" - <<'PYTHON'
import mlflow
run = mlflow.search_runs(experiment_names=["gpu-check"], output_format="list")[0]
tags, metrics = run.data.tags, run.data.metrics
print(f"run {run.info.run_id}: {run.info.status}; kto.devices={tags.get('kto.devices')}, "
      f"kto.precision={tags.get('kto.precision')}, test_accuracy={metrics.get('test_accuracy')}")
assert run.info.status == "FINISHED" and "GPU" in tags["kto.devices"] and tags["kto.precision"] == "mixed_float16", tags
PYTHON

echo "== 2. images/s of the trainer's fit at 224 px on the GPU"
"$PY" bench/bench_multiworker.py --single --size 224 --count 512 --epochs 3 --json "$OUT/gpu_float32.json"
"$PY" bench/bench_multiworker.py --single --size 224 --count 512 --epochs 3 --mixed_precision \
  --json "$OUT/gpu_mixed.json"
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
  CUDA_VISIBLE_DEVICES=-1 "$PY" bench/bench_multiworker.py --single --size 224 --count 128 --epochs 2 \
    --json "$OUT/this_cpu.json"
fi

echo "== 3. next to the CPU figure"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = [(f"GPU, {name}", json.loads((out / f"gpu_{name}.json").read_text())) for name in ("float32", "mixed")]
if (out / "this_cpu.json").is_file():
    rows.append(("this machine's CPUs", json.loads((out / "this_cpu.json").read_text())))
for label, result in rows:
    run = result["runs"]["fit"]
    print(f"{label:22s} {result['one_worker_fit_img_s']:8.1f} images/s  ({', '.join(run['devices'])}, "
          f"{run['precision']}, epochs {run['epoch_s']} s)")
published = Path("bench/results/results.json")
if published.is_file():
    figure = json.loads(published.read_text())["figures"].get("train_img_s_224", {})
    print(f"{'2-core CPU, published':22s} {figure.get('value', float('nan')):8.1f} images/s  "
          f"(bench/results/results.json, {figure.get('detail', '')})")
print(f"{'2-core CPU, brief':22s} {9.0:8.1f} images/s  (brief section 5: about 9 images/s at 224 px)")
EOF
echo "gpu_check: done; outputs under $OUT"
