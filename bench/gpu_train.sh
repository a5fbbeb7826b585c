#!/usr/bin/env bash
# sbanet_swin_b training throughput on one CUDA GPU: bf16 autocast, batch 12 (the paper's global
# batch), 448x448, 20-token expressions, random weights. Forward + loss + backward + AdamW step;
# 5 warm-up steps, then the median of 20 synchronised steps, and the peak GPU memory.
#
#   bench/gpu_train.sh [OUT.json] [extra train.bench options, e.g. --batch 8]
#
# Prints the markdown table and writes OUT.json (default bench-gpu-train.json).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-gpu-train.json}"
shift || true
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PYTHON" -m train.bench --parts train --train-presets sbanet_swin_b --device cuda --dtype bf16 \
    --batch 12 --train-warmup 5 --train-steps 20 --out "$out" "$@"
