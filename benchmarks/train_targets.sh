#!/usr/bin/env bash
# Issue 9's target runs: gated_pixelcnn on the fixed binarized MNIST and on 8-bit MNIST, trained side by
# side on one GPU, then the best checkpoint of each evaluated on the full test set.
#
#   bash benchmarks/train_targets.sh MINUTES [DEVICE]
#
# Each call trains both runs for MINUTES more minutes: a run folder that exists is resumed from its
# last checkpoint (exactly, see `pixelcnn train --resume`), otherwise the run starts. Run folders:
# runs/gpu-bmnist and runs/gpu-mnist; test results: runs/gpu-*-test.json.
set -euo pipefail
minutes=${1:?usage: train_targets.sh MINUTES [DEVICE]}
device=${2:-cuda}
py=${PYTHON:-python3}
common=(--model gated_pixelcnn --hidden 64 --layers 15 --output-hidden 256 --epochs 200 --lr 2e-3 --gamma 0.97
        --grad-clip 5 --batch-size 128 --precision bf16 --samples 16 --seed 0)
mkdir -p runs
for spec in bmnist:binarized_mnist mnist:mnist; do
    name=gpu-${spec%%:*}; dataset=${spec#*:}
    if [ -f runs/$name/run.json ]; then
        args=(--resume runs/$name --time-budget "$minutes" --device "$device")
    else
        args=("${common[@]}" --dataset "$dataset" --time-budget "$minutes" --device "$device" --out runs/$name)
    fi
    echo "pixelcnn train ${args[*]}" >> runs/$name.commands
    $py -m pixelcnn train "${args[@]}" >> runs/$name.log 2>&1 &
done
wait
for name in gpu-bmnist gpu-mnist; do
    $py -m pixelcnn eval runs/$name/checkpoints/best --split test --device "$device" --json runs/$name-test.json
done
