"""The ``serve`` command: load the models, build the app, run uvicorn."""

from __future__ import annotations

import ipaddress
import sys

from pixelcnn.validation import COUNT, MODEL_HELP, Integer, flag

PORT = Integer(0, 65535)
LOOPBACK_NAMES = {"localhost"}


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="a local web app: draw, erase, complete, sample, likelihood, compress",
                       description="Start a local web app for one or more models and print its address. "
                                   "Needs the serve extra: pip install 'pixelcnn[serve]'.")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help=f"{MODEL_HELP} (default: every shipped checkpoint)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=flag(PORT.parse), default=8000)
    p.add_argument("--workers", type=flag(COUNT.parse), default=4, help="jobs one model runs at once (default 4)")
    p.set_defaults(run=run_serve)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_models(names: list[str]) -> dict:
    """Display name -> loaded model, in the order given; with ``names`` empty, the shipped checkpoints,
    completion models first (the page opens on the first)."""
    import pixelcnn
    from pixelcnn import pretrained

    if names:
        return {name: pixelcnn.load(name) for name in names}
    models = {f"pretrained:{n}": pixelcnn.load(f"pretrained:{n}") for n in pretrained.available()}
    return dict(sorted(models.items(), key=lambda item: not item[1].config.inpainting))


def run_serve(args) -> int:
    from pixelcnn.errors import ConfigError

    try:
        import uvicorn

        from pixelcnn.serve.app import create_app
    except ImportError as e:
        raise ConfigError(f"pixelcnn serve needs the serve extra (pip install 'pixelcnn[serve]'): {e}") from None
    models = load_models(args.models)
    if not is_loopback(args.host):
        print(f"pixelcnn serve: warning: listening on {args.host}, not loopback: anyone who can reach this "
              f"address can use the app (it has no authentication)", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {', '.join(models)} at http://{host}:{args.port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(create_app(models, args.workers), host=args.host, port=args.port, log_level="warning")
    return 0
