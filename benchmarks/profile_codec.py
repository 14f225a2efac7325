"""Where format 3's exact-arithmetic coding spends its time: cProfile of one chunk with pretrained:mnist's weights.

    OMP_NUM_THREADS=1 PIXELCNN_DATA=../shared/data python benchmarks/profile_codec.py [--rows 8] [--images 64]

The model is pretrained:mnist's network on the top ROWS rows of the first IMAGES MNIST test images
(the same weights: a gated_pixelcnn's parameters do not depend on the height), so that a profile
takes seconds. Prints the share of the coding time spent in the exact linear maps, in rounding
their operands, in the float64 GEMMs themselves and in the gates' tanh and sigmoid.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import torch

import pixelcnn
from pixelcnn.data import load_dataset

SHOWN = {  # (file name, function) -> what it is
    ("blocks.py", "matmul"): "exact linear maps (matmul, addmm)",
    ("blocks.py", "to_blocks"): "rounding operands to block floating point",
    ("~", "<built-in method torch.matmul>"): "the float64 GEMMs themselves",
    ("layers.py", "gate"): "gates: table tanh and sigmoid",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--images", type=int, default=64)
    args = p.parse_args()
    shipped = pixelcnn.load("pretrained:mnist")
    x = torch.as_tensor(load_dataset("mnist", "test").images[: args.images]).long()[:, :, : args.rows]
    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, args.rows, 28), levels=256, hidden=64, layers=15,
                            output_hidden=256)
    model.load_state_dict(shipped.state_dict())
    profile = cProfile.Profile()
    profile.runcall(pixelcnn.compress, model, x)
    stats = pstats.Stats(profile)
    print(f"{args.images} images x {args.rows} rows, {torch.get_num_threads()} threads: {stats.total_tt:.2f} s")
    for (path, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        what = SHOWN.get((path.rsplit("/", 1)[-1], name))
        if what:
            print(f"{100 * cumulative / stats.total_tt:5.1f} %  {what}")


if __name__ == "__main__":
    main()
