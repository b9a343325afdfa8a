"""``faceforge train``: train from a YAML config with typed ``--section.key value`` overrides, into a run
folder (``runs/<name>/<timestamp>/``: ``config.yaml``, ``checkpoints/{best,last}.ckpt``, ``metrics.json``,
``tb/`` and, after the test-pair evaluation (``data.test_pairs`` set and no ``--no-test``), ``report.json``,
``report.md`` and ``roc.png`` — the same files ``faceforge eval`` writes there). Details: docs/training.md.
"""

from __future__ import annotations

import argparse
import sys

from faceforge.cli._common import note
from faceforge.eval.report import write_report
from faceforge.train.config import dump_config, load_config, validate_components


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    p = sub.add_parser(
        "train",
        help="train a model (YAML config + --section.key value overrides)",
        description="Train a model. Any config key can be overridden, typed as the config declares it: "
        "--trainer.max_epochs 3 --optimizer.weight_decay 5e-4 --data.val_sets '{lfw: lfw.bin}' "
        "--model.backbone.width 0.5 (docs/training.md). Resume with --resume auto (newest run of "
        "the same name) or --resume PATH/last.ckpt. The run folder gets report.json/.md and roc.png "
        "of the test pairs (data.test_pairs) unless --no-test.",
    )
    p.add_argument("--config", "-c", help="YAML config file (defaults apply to keys it leaves out)")
    p.add_argument(
        "--print_config",
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit",
    )
    p.add_argument("--no-test", action="store_true", help="skip the test-pair evaluation after training")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, then print it or train."""
    # Types (load_config), ranges and components are all checked before the run folder exists: a
    # bad value leaves nothing behind.
    cfg = load_config(args.config, args.overrides)
    validate_components(cfg)
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    from faceforge.train.run import env_rank, train

    result = train(cfg, evaluate_test=not args.no_test)
    if env_rank() != 0:  # the other processes of a distributed run stay quiet
        return 0
    print(f"run directory: {result.run_dir}")
    print(f"best checkpoint: {result.best_checkpoint}")
    if result.test:
        from faceforge.eval.report import format_table

        rows = {"test (model)": result.test["model"], "test (raw pixels)": result.test["raw_pixels"]}
        print(format_table(rows))
        paths = write_report(rows, result.run_dir)
        print(f"report: {paths['md']}")
    else:
        why = "--no-test" if args.no_test else "data.test_pairs is not set"
        note(
            args,
            f"no report.json / report.md / roc.png in the run folder ({why}); `faceforge eval` writes them",
        )
    return 0
