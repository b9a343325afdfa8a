"""The command line stays thin (issue #17): no ``faceforge.cli`` module over :data:`MAX_LINES` lines.

A CLI module parses arguments, calls one library function and prints; logic that makes one grow
belongs in its package (``faceforge.eval.run``, ``faceforge.data.pack``, ``faceforge.infer.tasks``, ...).
"""

from __future__ import annotations

from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "src" / "faceforge" / "cli"
MAX_LINES = 250


def test_every_cli_module_is_at_most_250_lines() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in sorted(CLI.glob("*.py"))}
    assert sizes, f"no CLI modules found under {CLI}"
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"CLI modules over {MAX_LINES} lines (move their logic into the library): " + ", ".join(
        f"{name} ({n})" for name, n in sorted(over.items())
    )
