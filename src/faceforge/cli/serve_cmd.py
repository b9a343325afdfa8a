"""``faceforge serve``: the REST service and its verify page under uvicorn, for a training checkpoint
(``.ckpt``) or an ONNX file (``.onnx``); the API key is read from the environment variable named by
``--api-key-env``, never from the command line. Details: docs/serve.md.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from faceforge.cli._common import add_model_options, add_precision_option, load_recognizer
from faceforge.errors import FaceforgeError

__all__ = ["build_app", "register"]

log = logging.getLogger(__name__)


def _max_batch(v: str) -> int | None:
    if v == "auto":
        return None
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a positive integer, got {v!r}")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    p = sub.add_parser("serve", help="REST service (verify / embed / search) with a verify page at /")
    add_model_options(p)
    add_precision_option(p)
    p.add_argument("--gallery", help="gallery directory for /v1/search (faceforge gallery build)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require the X-API-Key header to equal the value of this environment variable",
    )
    p.add_argument("--max-body-mb", type=float, default=10.0, help="request size limit in MiB (default 10)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help="largest image a client may send, in pixels, read from its header before decoding (default 40M)",
    )
    p.add_argument(
        "--max-decode-mb",
        type=float,
        default=512.0,
        help="memory budget of the decoded images of all requests in flight, MiB (default 512)",
    )
    p.add_argument(
        "--decode-max-side",
        type=int,
        default=2048,
        help="shrink uploads to this longer side while decoding; 0: never (default 2048)",
    )
    p.add_argument(
        "--decode-wait-s",
        type=float,
        default=5.0,
        help="seconds a request waits for decode budget before a 503 with Retry-After (default 5)",
    )
    p.add_argument(
        "--expose-paths",
        action="store_true",
        help="let server file paths (model file, gallery image paths) appear in answers",
    )
    p.add_argument(
        "--max-batch",
        type=_max_batch,
        default=None,
        help="crops of concurrent requests embedded in one model call: auto (default: 16 on a GPU or with "
        "model processes; otherwise 16 when a start-up probe finds batches cheaper per crop, else 1) or a "
        "number; 1: one request at a time",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="how long a batch waits for more requests after its first (default 0: never waits)",
    )
    p.add_argument(
        "--batch-workers",
        type=int,
        default=1,
        help="batches that may run at once, each in its own thread (default 1); on an N-core CPU, "
        "--batch-workers N --threads 1 keeps every core on a batch",
    )
    p.add_argument(
        "--batch-process",
        choices=["auto", "on", "off"],
        default="auto",
        help="run each batch worker's model calls in a process of its own, beside the request threads "
        "(auto, the default: for a PyTorch model on a CPU with 2+ cores; docs/serve.md)",
    )
    p.add_argument("--detector", default="auto", help="face detector: auto, a detector name or a model file")
    p.add_argument(
        "--detector-model", help="detector model file for --detector NAME (e.g. SCRFD det_10g.onnx)"
    )
    p.add_argument("--threshold", type=float, help="cosine threshold (default: the model's calibration)")
    p.add_argument("--far", type=float, help="use the calibration's threshold at this false accept rate")
    p.add_argument("--threads", type=int, help="PyTorch / ONNX Runtime CPU threads (default: the library's)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (access and server lines; default: info)",
    )
    p.set_defaults(func=cmd_serve)


def build_app(args: argparse.Namespace) -> Any:
    """The FastAPI app for parsed ``serve`` arguments (model, gallery and API key loaded and checked)."""
    try:
        from faceforge.serve.app import create_app
    except ImportError as e:
        raise FaceforgeError(
            f"faceforge serve needs {e.name or 'fastapi'}: pip install 'faceforge[serve]'"
        ) from None
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key:
            raise FaceforgeError(
                f"--api-key-env {args.api_key_env}: the environment variable {args.api_key_env} is not set "
                "or empty; export it with the key clients must send in X-API-Key"
            )
    if not args.max_body_mb > 0:
        raise FaceforgeError(f"--max-body-mb must be positive, got {args.max_body_mb}")
    if args.max_pixels < 1:
        raise FaceforgeError(f"--max-pixels must be positive, got {args.max_pixels}")
    if not args.max_decode_mb > 0:
        raise FaceforgeError(f"--max-decode-mb must be positive, got {args.max_decode_mb}")
    if args.decode_max_side != 0 and args.decode_max_side < 64:
        raise FaceforgeError(
            f"--decode-max-side must be 0 (never shrink) or >= 64, got {args.decode_max_side}"
        )
    if not args.decode_wait_s > 0:
        raise FaceforgeError(f"--decode-wait-s must be positive, got {args.decode_wait_s}")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise FaceforgeError(f"--port must be in 0..65535, got {args.port}")
    if args.threads is not None:
        if args.threads < 1:
            raise FaceforgeError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    recognizer = load_recognizer(args)
    gallery = None
    if args.gallery:
        from faceforge.infer import Gallery

        gallery = Gallery.load(args.gallery)
    if recognizer.detector_missing:
        log.warning(
            "no face detector file found (faceforge models fetch yunet): only aligned crops at the model's "
            "input size can be sent; photos get a 400"
        )
    if recognizer.threshold is None:
        log.warning("model %s has no calibration: /v1/verify needs a threshold field", args.model)
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: anyone who can reach it can use it", args.host)
    return create_app(
        recognizer,
        gallery,
        api_key=api_key,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_pixels=int(args.max_pixels),
        max_decode_bytes=int(args.max_decode_mb * 2**20),
        decode_max_side=int(args.decode_max_side) or None,
        decode_wait_s=float(args.decode_wait_s),
        expose_paths=bool(args.expose_paths),
        max_batch=args.max_batch,
        max_wait_ms=float(args.max_wait_ms),
        batch_workers=int(args.batch_workers),
        batch_process={"auto": None, "on": True, "off": False}[args.batch_process],
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the model (and gallery) and serve until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise FaceforgeError(
            "faceforge serve needs fastapi and uvicorn: pip install 'faceforge[serve]'"
        ) from None
    from faceforge.serve.app import describe_limits

    app = build_app(args)
    print(f"faceforge: serving {args.model} on http://{args.host}:{args.port}/ (API docs at /docs)")
    print(f"faceforge: {describe_limits(app.state.limits)}")
    mb = app.state.max_batch
    how = f"up to {mb} crops of concurrent requests per model call" if mb > 1 else "one request at a time"
    if mb > 1 and args.batch_workers > 1:
        how += f", {args.batch_workers} calls at once"
    if mb > 1 and app.state.batch_process:
        how += f", in {args.batch_workers} model process{'es' if args.batch_workers > 1 else ''}"
    print(f"faceforge: model calls: {how} (--max-batch {args.max_batch or 'auto'})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
