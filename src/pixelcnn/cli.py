"""The ``pixelcnn`` command line: parse, call the library, print.

Each command lives with the feature it drives: a module in ``COMMAND_MODULES`` defines
``add_commands(subparsers)``, adding its sub-commands with ``set_defaults(run=function)``;
``function(args)`` returns an exit status. Bad input, whether argparse or the library finds it
(a PixelCNNError), becomes one line on stderr and exit status 2, not a traceback; so does a
file that cannot be read or written (an OSError: a full disk, a missing permission).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys

from pixelcnn.errors import PixelCNNError

COMMAND_MODULES = [
    "pixelcnn.commands",
    "pixelcnn.coding.commands",
    "pixelcnn.serve.commands",
    "pixelcnn.receptive_field.commands",
]


class Parser(argparse.ArgumentParser):
    """argparse with errors in one line: what was wrong, and where the usage is."""

    commands: dict[str, "Parser"] = {}      # the top-level parser's sub-commands, by name

    def error(self, message: str):
        message = re.sub(r"^argument (-[^/ :]+)/[^ :]+:", r"argument \1:", message)     # one spelling of the flag
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from pixelcnn import __version__

    parser = Parser(
        prog="pixelcnn",
        description="Autoregressive image models with exact likelihoods: train, evaluate, sample, complete, compress.",
    )
    parser.add_argument("--version", action="version", version=f"pixelcnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    parser.commands = sub.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                               # named by the command they were given to
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except PixelCNNError as e:
        print(f"pixelcnn {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:                 # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        print(f"pixelcnn {args.command}: error: cannot use{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        print(f"pixelcnn {args.command}: error: out of memory: expected a smaller --n or --batch-size "
              f"({one_line(str(e))[:160]})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pixelcnn {args.command}: interrupted", file=sys.stderr)
        return 130


def out_of_memory(e: BaseException) -> bool:
    """torch.OutOfMemoryError on accelerators; on CPUs a RuntimeError from the allocator."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e)


def one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
