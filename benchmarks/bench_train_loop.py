"""`pixelcnn train`'s training loop against a bare loop over the same model and data, in one run.

Both train the gated_pixelcnn of bench_vs_plain.py's matched configuration on MNIST, from a
fresh model, for the same number of Adam steps on batches drawn in the same way. The bare loop
is forward, backward and optimizer step on in-memory batches, nothing else. The trainer
(`pixelcnn.training.train`, what `pixelcnn train` runs) adds the EMA of the weights, the NaN
check, the metrics file, the progress bar and a checkpoint (weights, EMA and optimizer state)
every ``--checkpoint-every`` steps and once at the start; its figure is the ``images_per_s`` it
writes to metrics.jsonl at the last step, which counts from the start of ``fit``. The
end-of-run validation is not training and is left out of both. The two alternate, and the
figure is the median over repeats of trainer / bare images/s.

    OMP_NUM_THREADS=1 PIXELCNN_DATA=DIR python benchmarks/bench_train_loop.py [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import pixelcnn
from pixelcnn import training
from pixelcnn.data import load_dataset
from bench_vs_plain import CONFIGS

MODEL = CONFIGS["matched"]


def bare_images_per_s(data, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = pixelcnn.create("gated_pixelcnn", image_shape=data.image_shape, levels=data.levels, **MODEL)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(len(data))
    start = time.perf_counter()
    for s in range(steps):
        x, _ = data.batch(perm[s * batch : (s + 1) * batch])
        loss = model.nll(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def trainer_images_per_s(out: Path, steps: int, batch: int, checkpoint_every: int) -> float:
    cfg = training.TrainConfig(model="gated_pixelcnn", dataset="mnist", batch_size=batch, max_steps=steps, epochs=1,
                               log_every=steps, checkpoint_every=checkpoint_every, samples=0, valid_limit=batch)
    training.train(cfg, out, **MODEL)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["event"] == "train"][-1]["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=5)
    args = p.parse_args()
    data = load_dataset("mnist", "train")
    rates = {"bare": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for kind in (("bare", "trainer") if r % 2 == 0 else ("trainer", "bare")):
                if kind == "bare":
                    rates[kind].append(bare_images_per_s(data, args.steps, args.batch))
                else:
                    out = Path(tmp) / f"run{r}"
                    rates[kind].append(trainer_images_per_s(out, args.steps, args.batch, args.checkpoint_every))
    ratio = statistics.median(t / b for t, b in zip(rates["trainer"], rates["bare"]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps of batch {args.batch}, "
          f"checkpoint every {args.checkpoint_every} steps, {args.repeats} repeats")
    print(f"bare loop {statistics.median(rates['bare']):.1f} img/s, pixelcnn train {statistics.median(rates['trainer']):.1f} "
          f"img/s: trainer / bare = {ratio:.2f}")
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
