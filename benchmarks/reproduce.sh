#!/usr/bin/env bash
# Re-evaluate every shipped checkpoint on its full test split and print the table beside the
# recorded figures. Pass --subset N to use a random (seeded) subset of N test images.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pixelcnn pretrained --reproduce "$@"
