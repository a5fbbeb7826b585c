#!/usr/bin/env bash
# sbanet on one CUDA GPU: inference and training, each configuration in a fresh process.
#
#   benchmarks/gpu_bench.sh [OUT_DIR] [extra benchmarks.bench options for every run]
#
# 1. inference.json: sbanet_swin_b as LAVT and as full SBANet, eager and fast path, fp32 and
#    bf16, batch 1 at 448x448 (20-token expression); K = 1 and 8 expressions on one image, run
#    one at a time and as one batch, for sbanet_swin_b and the shipped default model
#    (3 rounds x 5 runs after a warm-up; CUDA is synchronised by the copy of each result).
# 2. train-bN.json: sbanet_swin_b training samples/s (forward + loss + backward + AdamW step),
#    bf16 autocast, 448x448, random data (model only), batch 12 (the paper's global batch) and
#    then larger batches until one no longer fits (its record says "failed": out of memory).
# 3. loader: the same training fed by the real loader (configs/gpu_loader_bench.yaml: the
#    dubai-aerial conversion as JPEG, 8 DataLoader workers), 80 steps at batch 12; its steps.csv
#    samples_per_s against part 2's batch-12 row says whether the loader keeps up. Needs the
#    conversion (DUBAI=path of dubai-aerial, default ../shared/data/dubai-aerial); skipped without.
# Each run prints its markdown table; OUT_DIR (default bench-gpu) gets the JSON and markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-gpu}"
shift || true
mkdir -p "$out"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -m benchmarks.bench --parts speed,multi --device cuda --precisions fp32,bf16 --expressions 1,8 \
    --rounds 3 --out "$out/inference.json" --markdown "$out/inference.md" "$@"
for batch in 12 24 32 48 64; do
    if ! "$PYTHON" -m benchmarks.bench --parts train --train-presets sbanet_swin_b --device cuda --dtype bf16 \
        --batch "$batch" --train-warmup 5 --train-steps 20 --out "$out/train-b$batch.json" \
        --markdown "$out/train-b$batch.md" "$@"; then
        echo "batch $batch did not run (see $out/train-b$batch.json): the previous batch is the largest that fits"
        break
    fi
done
dubai="${DUBAI:-../shared/data/dubai-aerial}"
if [ -d "$dubai" ]; then
    [ -d runs/data/dubai-referring-jpg ] || "$PYTHON" -m sbanet.data.semantic --input "$dubai" \
        --output runs/data/dubai-referring-jpg --val-tiles 6 --image-format jpg
    "$PYTHON" -m train.fit --config configs/gpu_loader_bench.yaml output.dir="$out/loader"
    tail -n 3 "$out/loader/steps.csv"
else
    echo "part 3 skipped: no dubai-aerial at $dubai (set DUBAI=...)"
fi
