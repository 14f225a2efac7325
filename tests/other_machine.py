"""The other side of the cross-machine codec tests: run in a subprocess whose environment picks other kernels.

    ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 python tests/other_machine.py FOLDER

FOLDER holds one sub-folder per case, written by test_exact.py: ``model/`` (a checkpoint),
``images.pt`` (images and labels) and ``here-METHOD.pxc`` (what the test process compressed). For
each case this process decodes every ``here-*.pxc`` and checks the images, then compresses the
same images with the same methods into ``there-METHOD.pxc`` for the test process to compare and
decode. It also decodes every committed file in tests/data/codec (formats 3 and 4). It prints what it did; any
mismatch raises.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import pixelcnn
from pixelcnn.coding import container, decode

CODEC_FILES = Path(__file__).resolve().parent / "data" / "codec"


def check_case(folder: Path) -> None:
    model = pixelcnn.load(folder / "model")
    saved = torch.load(folder / "images.pt", weights_only=True)
    images, labels = saved["images"], saved.get("labels")
    for file in sorted(folder.glob("here-*.pxc")):
        out = decode(model, file.read_bytes())
        if not torch.equal(out.images, images):
            raise SystemExit(f"{file}: decoded images differ")
        method = file.stem.removeprefix("here-")
        data = pixelcnn.compress(model, images, labels, method=method, chunk_size=saved["chunk_size"])
        (folder / f"there-{method}.pxc").write_bytes(data)
        print(f"{folder.name}/{file.name}: decoded; compressed again ({len(data)} bytes)")


def check_committed_files() -> None:
    for folder in sorted(p for p in CODEC_FILES.iterdir() if p.is_dir()):
        source = json.loads((folder / "source.json").read_text())
        local = folder / source["model"]
        model = pixelcnn.load(local if local.is_dir() else source["model"])
        for file in sorted(folder.glob("images*.pxc")):
            data = file.read_bytes()
            assert container.read_header(data).version in (3, 4)      # 0.2.0's, and later families'
            decode(model, data)                # CompressionError unless the content digest matches
            print(f"{folder.name}/{file.name}: decoded")


def main() -> None:
    print(f"kernels: {torch.backends.cpu.get_cpu_capability()}, threads: {torch.get_num_threads()}")
    for folder in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
        check_case(folder)
    check_committed_files()


if __name__ == "__main__":
    main()
