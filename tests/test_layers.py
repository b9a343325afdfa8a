"""The layering of ``docs``/ARCHITECTURE: every import in ``src/faceforge`` points down the layer table.

Every ``import`` / ``from ... import`` statement is read with :mod:`ast`: at module level, inside
functions and under ``if TYPE_CHECKING:``, absolute and relative (``from . import x``,
``from ..serve import app``), plus ``importlib.import_module("faceforge....")`` with a literal name.
``from faceforge import create_model`` counts as an import of the module the lazy facade
(``faceforge.__init__._EXPORTS``) forwards to.

Rules (the same as ``../shared/tools/check_layers.py``):

* a module imports only from its own package or from a lower layer;
* same-layer imports across packages only at layers 0–1 (small leaf modules) and between
  ``models``↔``heads`` and ``infer``↔``export``;
* nobody imports ``faceforge.cli`` except ``cli`` itself, and a ``cli`` module imports no other
  ``cli`` module but ``cli._common`` (``cli.main`` finds the verbs by name at run time);
* ``benchmarks/`` import the library, never ``faceforge.cli``;
* every module under ``src/faceforge`` has a row in :data:`LAYERS` (a new package must be placed).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

#: module prefix -> layer (longest prefix wins). Bottom first, as in ARCHITECTURE.md.
LAYERS: dict[str, int] = {
    "faceforge": 0,  # the package facade: __version__ and lazy, by-name exports only
    "faceforge.errors": 0,
    "faceforge.registry": 0,
    "faceforge.fileio": 1,
    "faceforge.imageio": 1,
    "faceforge.hub": 1,
    "faceforge.onnx_io": 1,
    "faceforge.progress": 1,
    "faceforge.models.face_cfg": 1,  # the preprocessing contract (FaceConfig) lives under models/
    "faceforge.data": 2,
    "faceforge.align": 3,
    "faceforge.models": 4,
    "faceforge.heads": 4,
    "faceforge.eval": 5,
    "faceforge.train": 6,
    "faceforge.infer": 7,
    "faceforge.export": 7,
    "faceforge.serve": 8,
    "faceforge.cli": 9,
}
#: different packages of one layer that may import each other
SAME_LAYER_OK = ({"faceforge.models", "faceforge.heads"}, {"faceforge.infer", "faceforge.export"})
#: layers whose modules may import each other freely (small leaf modules with no package of their own)
FREE_LAYERS = {0, 1}
#: the only cli module other cli modules may import
CLI_SHARED = "faceforge.cli._common"

#: violations present when this test was written, printed on every run until they are fixed (never
#: skipped silently: a new one fails the test, and a fixed one must be removed from here)
KNOWN: set[str] = set()


def _group(module: str, layers: dict[str, int]) -> str | None:
    """The row of ``layers`` that ``module`` falls under (longest prefix), or None."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in layers:
            return key if key != "faceforge" or n == len(parts) else None
    return None


def _module_name(path: Path, src: Path) -> tuple[str, bool]:
    """(dotted module name, is a package ``__init__``) of a file under ``src``."""
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _facade_exports(src: Path, pkg: str) -> dict[str, str]:
    """``{name: module}`` of the ``_EXPORTS`` dict literal in the package's ``__init__`` (if any)."""
    init = src / pkg / "__init__.py"
    if not init.is_file():
        return {}
    for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in targets):
                return {
                    k.value: v.value
                    for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                }
    return {}


def imported_modules(
    tree: ast.AST, module: str, is_pkg: bool, known: set[str], exports: dict[str, str]
) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in ``tree`` of ``module`` (relative ones resolved).

    ``from M import n`` yields ``M.n`` when that is a module in ``known``, the facade's target when
    ``M`` is the root package and ``n`` one of its lazy exports, else ``M``.
    """
    package = module if is_pkg else module.rpartition(".")[0]
    root = module.split(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:
                    yield node.lineno, sub
                elif target == root and a.name in exports:
                    yield node.lineno, exports[a.name]
                else:
                    yield node.lineno, target
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def find_violations(
    src: Path,
    pkg: str = "faceforge",
    layers: dict[str, int] = LAYERS,
    same_layer_ok: tuple[set[str], ...] = SAME_LAYER_OK,
) -> list[str]:
    """Every import under ``src/<pkg>`` that breaks the layer rules, as ``path:line: reason``."""
    files = sorted((src / pkg).rglob("*.py"))
    names = {f: _module_name(f, src) for f in files}
    known = {n for n, _ in names.values()}
    exports = _facade_exports(src, pkg)
    out: list[str] = []
    for f in files:
        me, is_pkg = names[f]
        where = f.relative_to(src.parent) if src.parent in f.parents else f
        g_me = _group(me, layers)
        if g_me is None:
            out.append(f"{where}:1: {me} is in no row of the layer table")
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        for line, target in imported_modules(tree, me, is_pkg, known, exports):
            if target != pkg and not target.startswith(pkg + "."):
                continue
            g_t = _group(target, layers)
            if g_t is None:
                out.append(f"{where}:{line}: {me} imports {target}, which is in no row of the layer table")
                continue
            cli = f"{pkg}.cli"
            if g_t == cli and g_me != cli:
                out.append(f"{where}:{line}: {me} imports the command line ({target})")
                continue
            if g_t == cli and g_me == cli:
                if target not in (cli, f"{pkg}.cli._common") and target != me:
                    out.append(f"{where}:{line}: cli module {me} imports cli module {target}")
                continue
            if g_t == g_me:
                continue
            lt, lm = layers[g_t], layers[g_me]
            if lt > lm:
                out.append(f"{where}:{line}: {me} (layer {lm}) imports {target} (layer {lt}): upward")
            elif lt == lm and lm not in FREE_LAYERS and {g_t, g_me} not in same_layer_ok:
                out.append(f"{where}:{line}: {me} imports {target} (both layer {lm}): sideways")
    return out


def benchmark_violations(bench: Path, pkg: str = "faceforge") -> list[str]:
    """Imports of ``<pkg>.cli`` in the scripts of ``bench`` (benchmarks use the library, not the CLI)."""
    out = []
    for f in sorted(bench.rglob("*.py")):
        tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        for line, target in imported_modules(tree, "__main__", False, set(), {}):
            if target == f"{pkg}.cli" or target.startswith(f"{pkg}.cli."):
                out.append(f"{f.name}:{line}: benchmark imports {target}")
            elif target == pkg:  # ``from faceforge import cli``
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and node.lineno == line and node.module == pkg:
                        if any(a.name == "cli" for a in node.names):
                            out.append(f"{f.name}:{line}: benchmark imports {pkg}.cli")
    return out


# --------------------------------------------------------------------------------------------------
# the real tree


def test_source_tree_follows_the_layers() -> None:
    found = set(find_violations(SRC))
    if KNOWN:
        print("known layering violations (to fix):\n  " + "\n  ".join(sorted(KNOWN)))
    new, fixed = found - KNOWN, KNOWN - found
    assert not new, "imports against the layers:\n" + "\n".join(sorted(new))
    assert not fixed, "fixed (remove from KNOWN):\n" + "\n".join(sorted(fixed))


def test_benchmarks_do_not_import_the_cli() -> None:
    assert benchmark_violations(REPO / "benchmarks") == []


def test_every_package_has_a_layer() -> None:
    pkgs = {p.parent.name for p in (SRC / "faceforge").glob("*/__init__.py")}
    mods = {p.stem for p in (SRC / "faceforge").glob("*.py") if p.stem != "__init__"}
    assert {f"faceforge.{n}" for n in pkgs | mods} <= set(LAYERS)


# --------------------------------------------------------------------------------------------------
# the checker can fail


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    """A small ``faceforge`` tree with one import of every forbidden kind, and allowed ones beside them."""
    _write(
        tmp_path / "src" / "faceforge",
        {
            "__init__.py": '_EXPORTS = {"FaceRecognizer": "faceforge.infer"}\n',
            "errors.py": "",
            "fileio.py": "from faceforge import errors\n",
            "data/__init__.py": "",
            "data/folder.py": "import faceforge.fileio\n\ndef f():\n    from faceforge.train import run\n",
            "data/pairs.py": "from faceforge import FaceRecognizer\n",
            "align/__init__.py": "from . import transform\n",
            "align/transform.py": "from ..eval import metrics\n",
            "models/__init__.py": "",
            "models/face_cfg.py": "from faceforge.models.backbones import registry\n",
            "models/backbones/__init__.py": "",
            "models/backbones/registry.py": (
                "from faceforge.heads import base\nfrom faceforge.models import face_cfg\n"
            ),
            "heads/__init__.py": "",
            "heads/base.py": "from faceforge.models.backbones import registry\n",
            "eval/__init__.py": "",
            "eval/metrics.py": "from faceforge.heads import base\nfrom faceforge.align import transform\n",
            "train/__init__.py": "",
            "train/run.py": "from faceforge.infer import x\n",
            "infer/__init__.py": "",
            "infer/x.py": "from faceforge.export import y\nfrom faceforge.serve import app\n",
            "export/__init__.py": "",
            "export/y.py": "from faceforge.infer import x\n",
            "serve/__init__.py": "",
            "serve/app.py": "from faceforge.cli._common import note\n",
            "cli/__init__.py": "",
            "cli/_common.py": "",
            "cli/a_cmd.py": "from faceforge.cli._common import note\nfrom . import b_cmd\n",
            "cli/b_cmd.py": "import importlib\nimportlib.import_module('faceforge.cli.a_cmd')\n",
            "unplaced.py": "",
        },
    )
    _write(
        tmp_path / "benchmarks",
        {"ok.py": "import faceforge.models\n", "bad.py": "from faceforge.cli.main import main\n"},
    )
    return tmp_path


def test_checker_reports_every_kind_of_violation(fake_tree: Path) -> None:
    found = find_violations(fake_tree / "src")
    text = "\n".join(found)
    expected = [
        "faceforge.data.folder (layer 2) imports faceforge.train.run (layer 6): upward",  # in a function
        "faceforge.data.pairs (layer 2) imports faceforge.infer (layer 7): upward",  # through the facade
        "faceforge.align.transform (layer 3) imports faceforge.eval.metrics (layer 5): upward",  # relative
        "faceforge.models.face_cfg (layer 1) imports faceforge.models.backbones.registry (layer 4): upward",
        "faceforge.eval.metrics imports faceforge.align.transform",  # not a violation: checked below
        "faceforge.train.run (layer 6) imports faceforge.infer.x (layer 7): upward",
        "faceforge.infer.x (layer 7) imports faceforge.serve.app (layer 8): upward",
        "faceforge.serve.app imports the command line (faceforge.cli._common)",
        "cli module faceforge.cli.a_cmd imports cli module faceforge.cli.b_cmd",
        "cli module faceforge.cli.b_cmd imports cli module faceforge.cli.a_cmd",  # import_module literal
        "faceforge.unplaced is in no row of the layer table",
    ]
    for e in expected:
        if e.startswith("faceforge.eval.metrics imports faceforge.align"):
            assert e not in text
            continue
        assert e in text, f"{e!r} not reported; got:\n{text}"
    # allowed: downward, same package, models<->heads, infer<->export, layer 0-1 among themselves
    for ok in (
        "faceforge.fileio imports",
        "faceforge.align imports",
        "faceforge.models.backbones.registry",
        "faceforge.heads.base",
        "faceforge.export.y",
        "faceforge.data.folder (layer 2) imports faceforge.fileio",
        "cli module faceforge.cli.a_cmd imports cli module faceforge.cli._common",
    ):
        assert not any(line.split(": ", 1)[1].startswith(ok) for line in found), (ok, found)
    assert len(found) == len(expected) - 1, text
    assert benchmark_violations(fake_tree / "benchmarks") == [
        "bad.py:1: benchmark imports faceforge.cli.main"
    ]


def test_sideways_and_allowed_same_layer_imports(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(
        src / "faceforge",
        {
            "__init__.py": "",
            "heads/__init__.py": "",
            "heads/h.py": "from faceforge.models import m\n",
            "models/__init__.py": "",
            "models/m.py": "from faceforge.heads import h\n",
            "train/__init__.py": "",
            "train/t.py": "from faceforge.eval import a\n",
            "eval/__init__.py": "",
            "eval/a.py": "",
        },
    )
    assert find_violations(src) == []  # models<->heads allowed, train -> eval downward
    # the same tree with eval and train put on one layer: train -> eval is now sideways
    layers = {**LAYERS, "faceforge.train": LAYERS["faceforge.eval"]}
    assert [v.split(": ", 1)[1] for v in find_violations(src, layers=layers)] == [
        "faceforge.train.t imports faceforge.eval.a (both layer 5): sideways"
    ]
    # and models<->heads without their exemption
    found = find_violations(src, same_layer_ok=())
    assert sorted(v.split(": ", 1)[1] for v in found) == [
        "faceforge.heads.h imports faceforge.models.m (both layer 4): sideways",
        "faceforge.models.m imports faceforge.heads.h (both layer 4): sideways",
    ]
