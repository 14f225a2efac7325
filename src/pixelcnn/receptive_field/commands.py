"""The ``receptive-field`` command: one sub-pixel's dependencies as a picture, and their counts."""

from __future__ import annotations

from pathlib import Path

from pixelcnn.errors import ConfigError
from pixelcnn.flags import add_model_flags, given_model_hyperparameters
from pixelcnn.validation import COUNT, MODEL_HELP, PNG_FILE, SEED, Integer, fail, flag

LEVELS = Integer(2, 256)
CHANNEL = Integer(0)
SIDE = Integer(1)
FAMILY_SHAPE = (1, 28, 28)              # a family given by name, at its defaults: MNIST's images unless told


def add_commands(sub) -> None:
    p = sub.add_parser("receptive-field", help="what one sub-pixel depends on, as a picture",
                       description="The gradient of one sub-pixel's log-probability with respect to every input "
                                   "sub-pixel (mean over random images), drawn with the causal past outlined and "
                                   "the past pixels it cannot see in orange.")
    p.add_argument("checkpoint", metavar="MODEL",
                   help=f"{MODEL_HELP}, or a family's name (its defaults, weights at their initial values)")
    p.add_argument("--pixel", type=flag(pixel_position), help="H,W (default: the middle of the image)")
    p.add_argument("--channel", type=flag(CHANNEL.parse), default=0, help="colour channel (default 0)")
    p.add_argument("--image-shape", "--image_shape", dest="image_shape", type=flag(image_shape),
                   help=f"CxHxW of a family given by name (default {'x'.join(map(str, FAMILY_SHAPE))})")
    p.add_argument("--levels", type=flag(LEVELS.parse), help="levels of a family given by name (default 256)")
    p.add_argument("--images", type=flag(COUNT.parse), default=4, help="random images averaged over (default 4)")
    p.add_argument("--seed", type=flag(SEED.parse), default=0)
    p.add_argument("--out", "-o", type=flag(PNG_FILE), default="receptive_field.png")
    add_model_flags(p.add_argument_group("a family given by name: its hyperparameters (default: its defaults)"))
    p.set_defaults(run=run_receptive_field)


def pixel_position(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        fail(None, "a pixel as H,W (two integers >= 0, like 14,20)", text)
    return int(parts[0]), int(parts[1])


def image_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        fail(None, "an image shape CxHxW (three integers >= 1, like 1x28x28)", text)
    return tuple(int(p) for p in parts)


def model_of(args):
    """The MODEL argument: a family's name (not a folder here) builds that family at its defaults."""
    import pixelcnn

    hp = given_model_hyperparameters(args)
    family = args.checkpoint in pixelcnn.available_models() and not Path(args.checkpoint).exists()
    if not family:
        given = [f"--{k.replace('_', '-')}" for k in hp] + [f for f, v in (("--image-shape", args.image_shape),
                                                                            ("--levels", args.levels)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to a family given by name, got a model: {args.checkpoint}")
        return pixelcnn.load(args.checkpoint)
    return pixelcnn.create(args.checkpoint, image_shape=args.image_shape or FAMILY_SHAPE, levels=args.levels or 256, **hp)


def run_receptive_field(args) -> int:
    from pixelcnn.receptive_field import draw, receptive_field

    model = model_of(args)
    _, height, width = model.image_shape
    pixel = args.pixel or (height // 2, width // 2)
    # receptive_field refuses a pixel or channel outside the images before computing anything
    field = receptive_field(model, pixel, args.channel, images=args.images, seed=args.seed)
    draw(field, scale=max(4, 336 // max(height, width))).save(args.out)
    n = field.counts()
    print(f"{model.name}: channel {args.channel} of pixel ({pixel[0]}, {pixel[1]}) depends on {n['seen']} of the "
          f"{n['past']} sub-pixels before it; {n['unseen_pixels']} earlier pixels unseen (orange); "
          f"{n['future_seen']} later sub-pixels seen; picture: {args.out}")
    return 0
