"""The ``faceforge`` command: thin sub-commands over the packages, and the one error path of the CLI
(exit codes 0 / 1 / 2 / 3 / 130 the same for every verb, ``--debug``, ``-v/--verbose``, ``--quiet``,
native log levels lowered); :func:`main` is the console script. Details: docs/architecture.md,
"Exit codes and errors".
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

# Native libraries read these when they are first loaded: set them before anything imports cv2.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from faceforge.errors import EXTRA_OF_MODULE, FaceforgeError, missing_extra

EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# Each module has ``register(subparsers)``; a command module whose optional dependency is missing
# is skipped so the rest of the CLI keeps working.
COMMAND_MODULES = (
    "faceforge.cli.train_cmd",
    "faceforge.cli.eval_cmd",
    "faceforge.cli.eval_verify_cmd",
    "faceforge.cli.compare_cmd",
    "faceforge.cli.demo_cmd",
    "faceforge.cli.data_io_cmd",
    "faceforge.cli.data_cmd",
    "faceforge.cli.models_cmd",
    "faceforge.cli.adapt_cmd",  # models adapt: after models_cmd, which makes the verb
    "faceforge.cli.align_cmd",
    "faceforge.cli.infer_cmd",
    "faceforge.cli.gallery_cmd",
    "faceforge.cli.export_cmd",
    "faceforge.cli.bench_align_cmd",
    "faceforge.cli.serve_cmd",
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``faceforge VERB: error: ... (see faceforge VERB --help)``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "required" in message and "--model" in message:  # a newcomer's first verify/embed call
            from faceforge.cli._common import model_hint

            message += model_hint()
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    """``faceforge.__version__``: the one place the version is written (pyproject.toml reads it too), so
    a source tree on ``sys.path`` prints the same as an installed wheel."""
    from faceforge import __version__

    return __version__


def _sub_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every sub-command parser under ``parser`` (recursively, each once)."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out += [child, *_sub_parsers(child)]
    return out


def _add_common_options(p: argparse.ArgumentParser) -> None:
    """``-v/--verbose``, ``--quiet`` and ``--debug`` on a verb (unless it defines its own)."""
    have = set(p._option_string_actions)
    g = p.add_argument_group("output")
    if not have & {"-v", "--verbose"}:
        g.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="also print library log lines (INFO)",
        )
    if "--quiet" not in have:
        g.add_argument(
            "--quiet",
            action="store_true",
            default=argparse.SUPPRESS,
            help="no notes, progress or library warnings on stderr (errors still print)",
        )
    if "--debug" not in have:
        g.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command."""
    parser = _Parser(
        prog="faceforge",
        description="Train, align, evaluate, export and serve face-recognition models.",
        epilog="exit codes: 0 done (yes), 1 ran but the answer is no (verify, detect), 2 error, "
        "3 internal error (a bug; --debug shows the traceback), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"faceforge {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("faceforge.cli"):
                continue
            raise
        mod.register(sub)
    for p in _sub_parsers(parser):
        _add_common_options(p)
    return parser


def _configure_logging(debug: bool, verbose: bool, quiet: bool) -> None:
    level = logging.INFO if (debug or verbose) else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    if "cv2" in sys.modules or verbose or debug:
        import cv2

        lv = cv2.utils.logging
        cv2.utils.logging.setLogLevel(lv.LOG_LEVEL_INFO if (verbose or debug) else lv.LOG_LEVEL_ERROR)


def _one_line(e: BaseException) -> str:
    """The user-facing line of an error (no traceback)."""
    if isinstance(e, FaceforgeError):
        return str(e)
    if isinstance(e, OSError):
        what = e.strerror or str(e) or type(e).__name__
        name = e.filename if e.filename is not None else ""
        return f"{name}: {what}" if name else what
    return f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__


def _parse_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions of decoders and parsers: a file that is not what it claims to be."""
    import json
    import pickle
    import struct
    import zipfile

    types: list[type[BaseException]] = [
        json.JSONDecodeError,
        UnicodeDecodeError,
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        struct.error,
    ]
    try:
        import yaml

        types.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from google.protobuf.message import DecodeError

        types.append(DecodeError)
    except ImportError:
        pass
    return tuple(types)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass


def _run(argv: list[str], debug: bool) -> int:
    """Parse ``argv`` and run the verb (exceptions go to :func:`main`)."""
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # --help, --version and argparse's one-line errors
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_ERROR
    verbose, quiet = bool(getattr(args, "verbose", False)), bool(getattr(args, "quiet", False))
    _configure_logging(debug, verbose, quiet)
    if not getattr(args, "func", None):  # no verb: the overview, as an error (nothing was done)
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    if extra and not getattr(args, "accepts_overrides", False):
        try:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        except SystemExit as e:
            return int(e.code) if isinstance(e.code, int) else EXIT_ERROR
    args.overrides = extra
    code = int(args.func(args) or 0)
    sys.stdout.flush()  # a closed pipe shows here, inside the error handling, not at exit
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faceforge`` console script; returns the exit code (docs/architecture.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _configure_logging(debug, False, False)
    try:
        return _run(argv, debug)
    except KeyboardInterrupt:
        print("faceforge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        print("faceforge: error: the output pipe was closed before all output was written", file=sys.stderr)
        return EXIT_ERROR
    except (FaceforgeError, OSError, *_parse_error_types()) as e:
        if debug:
            traceback.print_exc()
        print(f"faceforge: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:
        if debug:
            traceback.print_exc()
        if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] in EXTRA_OF_MODULE:
            verb = " ".join(["faceforge", *[a for a in argv if not a.startswith("-")][:1]])
            print(f"faceforge: error: {missing_extra(e.name or '', verb)}", file=sys.stderr)  # which extra
            return EXIT_ERROR
        print(
            f"faceforge: internal error: {_one_line(e)} (a bug; run again with --debug for the traceback "
            "and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
