"""``faceforge demo``: SynthFaces → train the quickstart config → held-out report, with no data at all."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

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
    p.add_argument(
        "--synth-version",
        type=int,
        choices=(1, 2),
        default=2,
        help="SynthFaces generator: 2 (3-D heads, which transfer better to real photos; default) or 1 "
        "(the original flat faces)",
    )
    p.add_argument(
        "--lfw",
        default=None,
        metavar="PATH",
        help="also evaluate on real photos: an LFW folder with pairs.txt and the images (or a pair "
        "file); faces are detected and aligned as by faceforge eval (LFW is never trained on)",
    )
    p.add_argument(
        "--detector", default="auto", help="face detector for --lfw: auto (default), a name, a file or none"
    )
    p.add_argument("--detector-model", default=None, help="detector model file for --lfw")
    add_progress_option(p)
    p.set_defaults(func=run, accepts_overrides=True)


def _lfw_pairs(path: str) -> Path:
    """The pair file of ``--lfw`` (a file, or a folder holding pairs.txt), checked before training."""
    from faceforge.errors import FaceforgeError

    p = Path(path).expanduser()
    pairs = p / "pairs.txt" if p.is_dir() else p
    if not pairs.is_file():
        raise FaceforgeError(f"--lfw {path}: no pairs.txt there; expected an LFW folder or a pair file")
    return pairs


def _real_rows(checkpoint: Path, pairs: Path, detector: str, detector_model: str | None) -> dict[str, Any]:
    """The trained model's verification row on the real pairs (plus how their faces were found).

    The detector goes by name: evaluation builds it now, after training (see :func:`run`), and one
    instance per thread where the backend's instances can run side by side.
    """
    from faceforge.eval.run import faces_lines, open_caches
    from faceforge.eval.suite import ModelInfo, SetSpec, evaluate_sets
    from faceforge.infer.loading import load_model

    info = ModelInfo.from_model(load_model(str(checkpoint)))
    cache, crops = open_caches(None, False)
    rows = evaluate_sets(
        [SetSpec("LFW (real photos)", pairs, "pairs")], info, "sum", cache=cache, detector=detector,
        detector_model=detector_model, crop_cache=crops,
    )  # fmt: skip
    for line in faces_lines(rows):
        print(line)
    return {k: v for k, v in rows.items() if k == "LFW (real photos)"}


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
    from faceforge.errors import FaceforgeError
    from faceforge.eval.report import format_table
    from faceforge.train.config import load_config, validate_components
    from faceforge.train.run import train

    # The config first: a bad override is an error before minutes of rendering.
    cfg = load_config(args.config or _default_config(), ["--data.root", args.data, *args.overrides])
    validate_components(cfg)
    pairs = None
    if args.lfw:
        from faceforge.align.choose import check_detector

        # Both checked now: a wrong path or a missing detector is an error before minutes of training.
        # The detector itself is built after training: rendering forks worker processes, which must not
        # inherit the native threads a built detector may have started (they can deadlock).
        pairs = _lfw_pairs(args.lfw)
        if args.detector != "none":
            check_detector(args.detector, args.detector_model)
    t0 = time.perf_counter()
    print(
        f"[1/3] SynthFaces v{args.synth_version}: {args.identities} training + "
        f"{args.val_identities} validation + {args.test_identities} held-out identities "
        f"x {args.images_per_id} images -> {args.data}",
        flush=True,
    )
    try:
        write_dataset(
            args.data,
            identities=args.identities,
            images_per_id=args.images_per_id,
            val_identities=args.val_identities,
            test_identities=args.test_identities,
            progress=show_progress(args),
            overwrite=args.overwrite,
            version=args.synth_version,
        )
    except FaceforgeError as e:  # the writer names its own flag; here the folder is --data
        raise FaceforgeError(str(e).replace("--out", "--data")) from None
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
    if pairs is not None:
        rows.update(_real_rows(Path(result.best_checkpoint), pairs, args.detector, args.detector_model))
    paths = write_report(rows, result.run_dir)
    print(format_table(rows))
    acc, base = result.test["model"]["accuracy"], result.test["raw_pixels"]["accuracy"]
    print(
        f"held-out 10-fold accuracy {acc:.4f} vs raw-pixel nearest neighbour {base:.4f} "
        f"(+{100 * (acc - base):.1f} points)"
    )
    if "LFW (real photos)" in rows:
        real = rows["LFW (real photos)"]
        print(
            f"real photos (LFW, never trained on): 10-fold accuracy {real['accuracy']:.4f}, "
            f"AUC {real['auc']:.4f}"
        )
    print(
        f"report: {paths['md']}   checkpoint: {result.best_checkpoint}   "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return 0
