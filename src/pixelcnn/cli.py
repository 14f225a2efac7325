"""The ``pixelcnn`` command line: parse, call the library, print.

Each command lives with the feature it drives: a module in ``COMMAND_MODULES`` defines
``add_commands(subparsers)``, adding its sub-commands with ``set_defaults(run=function)``;
``function(args)`` returns an exit status. Errors derived from PixelCNNError become one line
on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pixelcnn.errors import PixelCNNError

COMMAND_MODULES = [
    "pixelcnn.commands",
    "pixelcnn.coding.commands",
    "pixelcnn.serve.commands",
]


def build_parser() -> argparse.ArgumentParser:
    from pixelcnn import __version__

    parser = argparse.ArgumentParser(
        prog="pixelcnn",
        description="Autoregressive image models with exact likelihoods: train, evaluate, sample, complete, compress.",
    )
    parser.add_argument("--version", action="version", version=f"pixelcnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except PixelCNNError as e:
        print(f"pixelcnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pixelcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
