"""The ``faceforge`` command: thin sub-commands over the packages.

User errors (:class:`~faceforge.errors.FaceforgeError`, missing files) print one line to stderr and
exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from faceforge.errors import FaceforgeError

# Each module has ``register(subparsers)``; a command module whose optional dependency is missing
# is skipped so the rest of the CLI keeps working.
COMMAND_MODULES = (
    "faceforge.cli.train_cmd",
    "faceforge.cli.eval_cmd",
    "faceforge.cli.compare_cmd",
    "faceforge.cli.demo_cmd",
    "faceforge.cli.data_cmd",
    "faceforge.cli.models_cmd",
    "faceforge.cli.align_cmd",
    "faceforge.cli.infer_cmd",
    "faceforge.cli.export_cmd",
    "faceforge.cli.bench_align_cmd",
    "faceforge.cli.serve_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="faceforge",
        description="Train, align, evaluate, export and serve face-recognition models.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("faceforge.cli"):
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faceforge`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(
        level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except FaceforgeError as e:
        if debug:
            raise
        print(f"faceforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("faceforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
