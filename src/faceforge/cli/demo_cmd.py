"""``faceforge demo``: SynthFaces → train the quickstart config → held-out report, with no data at all."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from faceforge.cli._common import add_progress_option, show_progress
from faceforge.cli._common import positive_count as _positive
from faceforge.eval.report import write_report


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser(
        "demo",
        help="generate SynthFaces, train configs/quickstart.yaml, evaluate on held-out identities",
        description="SynthFaces -> train -> held-out report, with no data, GPU or network. Extra "
        "--section.key value arguments override the training config (as for faceforge train).",
    )
    p.add_argument("--config", default=None, help="training config (default: configs/quickstart.yaml)")
    p.add_argument(
        "--data",
        default="data/synthfaces",
        help="where SynthFaces is written (re-used when it holds the same set; default data/synthfaces)",
    )
    p.add_argument("--identities", type=_positive, default=600, help="training identities (default 600)")
    p.add_argument("--images-per-id", type=_positive, default=20, help="images per identity (default 20)")
    p.add_argument(
        "--test-identities",
        type=_positive,
        default=100,
        help="held-out identities of the report, at least 20 (default 100)",
    )
    p.add_argument(
        "--val-identities",
        type=_positive,
        default=50,
        help="validation identities that pick the best epoch, at least 20 (default 50)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a SynthFaces folder at --data that was written with other parameters",
    )
    add_progress_option(p)
    p.set_defaults(func=run, accepts_overrides=True)


def _default_config() -> str:
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *here.parents):
        c = base / "configs" / "quickstart.yaml"
        if c.is_file():
            return str(c)
    from faceforge.errors import FaceforgeError

    raise FaceforgeError(
        "configs/quickstart.yaml not found: run the demo from the faceforge checkout or pass --config"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo end to end and print the held-out table."""
    from faceforge.data.synth import write_dataset
    from faceforge.eval.report import format_table
    from faceforge.train.config import load_config, validate_components
    from faceforge.train.run import train

    # The config first: a bad override is an error before minutes of rendering.
    cfg = load_config(args.config or _default_config(), ["--data.root", args.data, *args.overrides])
    validate_components(cfg)
    t0 = time.perf_counter()
    print(
        f"[1/3] SynthFaces: {args.identities} training + {args.val_identities} validation + "
        f"{args.test_identities} held-out identities x {args.images_per_id} images -> {args.data}",
        flush=True,
    )
    write_dataset(
        args.data,
        identities=args.identities,
        images_per_id=args.images_per_id,
        val_identities=args.val_identities,
        test_identities=args.test_identities,
        progress=show_progress(args),
        overwrite=args.overwrite,
    )
    print(
        f"[2/3] training {cfg['model']['backbone']['name']} + {cfg['model']['head']['name']} "
        f"for {cfg['trainer']['max_epochs']} epochs ({time.perf_counter() - t0:.0f} s so far)",
        flush=True,
    )
    result = train(cfg)
    print(f"[3/3] held-out evaluation ({time.perf_counter() - t0:.0f} s so far)", flush=True)
    rows = {
        "SynthFaces held-out (model)": result.test["model"],
        "SynthFaces held-out (raw pixels)": result.test["raw_pixels"],
    }
    paths = write_report(rows, result.run_dir)
    print(format_table(rows))
    acc, base = result.test["model"]["accuracy"], result.test["raw_pixels"]["accuracy"]
    print(
        f"held-out 10-fold accuracy {acc:.4f} vs raw-pixel nearest neighbour {base:.4f} "
        f"(+{100 * (acc - base):.1f} points)"
    )
    print(
        f"report: {paths['md']}   checkpoint: {result.best_checkpoint}   "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return 0
