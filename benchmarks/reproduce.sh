#!/usr/bin/env bash
# Re-evaluate every shipped checkpoint on its full test split and print the table beside the
# recorded figures. Pass --limit N to use the first N test images only.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pixelcnn pretrained --reproduce "$@"
