"""Packaging: the version is written once, the sdist and wheel hold the package and nothing else, and
the inference side (``--help``, ``--version``, ``models list``, the service for an ONNX model) works
without the training extra (Lightning, timm, TensorBoard, matplotlib, jsonargparse)."""

from __future__ import annotations

import email.parser
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import faceforge

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

#: the ``train`` extra's top-level modules: none may be needed by the inference verbs
TRAINING_MODULES = ("lightning", "lightning_fabric", "pytorch_lightning", "timm", "tensorboard", "matplotlib",
                    "jsonargparse")  # fmt: skip
#: what the core install may require (issue #17): torch + the inference essentials
CORE = {"torch", "numpy", "opencv-python-headless", "pillow", "pyyaml", "safetensors", "tqdm"}


def _req_name(req: str) -> str:
    """``"lightning>=2.6,<2.7; extra == 'train'"`` -> ``"lightning"``."""
    for sep in "<>=!~[; ":
        req = req.split(sep)[0]
    return req.strip().lower()


# --------------------------------------------------------------------------------------------------
# the declared metadata


def test_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "faceforge.__version__"}
    assert faceforge.__version__[0].isdigit()
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
    assert f"## {faceforge.__version__}" in changelog and "## Unreleased" in changelog


def test_extras_layout() -> None:
    project = PYPROJECT["project"]
    core = {_req_name(r) for r in project["dependencies"]}
    assert core == CORE
    extras = {k: {_req_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    assert {"lightning", "timm", "tensorboard", "matplotlib", "jsonargparse"} <= extras["train"]
    assert {"fastapi", "uvicorn", "python-multipart", "onnxruntime"} <= extras["serve"]
    assert not extras["serve"] & {"lightning", "timm", "tensorboard", "matplotlib"}
    assert _self_extras(project["optional-dependencies"]["all"]) == set(extras) - {"all", "dev"}
    assert {"all"} <= _self_extras(project["optional-dependencies"]["dev"])
    assert "torchvision" not in core | set().union(*extras.values())
    lightning = next(r for r in project["optional-dependencies"]["train"] if _req_name(r) == "lightning")
    assert "<" in lightning, f"lightning pinned below the next untested minor: {lightning}"


def _self_extras(reqs: list[str]) -> set[str]:
    """The extras named in ``faceforge[...]`` entries of ``reqs``."""
    out: set[str] = set()
    for r in reqs:
        if r.startswith("faceforge["):
            out |= {e.strip() for e in r[len("faceforge[") : r.index("]")].split(",")}
    return out


# --------------------------------------------------------------------------------------------------
# sdist and wheel (built without isolation from a copy of the tree: ~4 s, no network)


def _tree_files() -> list[str]:
    """The files a release would be built from: tracked and untracked-but-not-ignored."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is needed to list the tree's files")
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"sdist": path, "wheel": path}`` built from a copy of the working tree."""
    pytest.importorskip("build")
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("tree")
    for rel in _tree_files():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    out = root / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}


def test_sdist_holds_the_package_and_no_tests_or_data(dists: dict[str, Path]) -> None:
    base = f"faceforge-{faceforge.__version__}"
    assert dists["sdist"].name == f"{base}.tar.gz"
    with tarfile.open(dists["sdist"]) as tf:
        names = [n.removeprefix(base + "/") for n in tf.getnames() if n != base]
    top = {n.split("/")[0] for n in names}
    assert top <= {"src", "LICENSE", "README.md", "CHANGELOG.md", "MANIFEST.in", "PKG-INFO", "pyproject.toml",
                   "setup.cfg"}, top  # fmt: skip
    assert {"LICENSE", "CHANGELOG.md", "src/faceforge/__init__.py", "src/faceforge/py.typed"} <= set(names)
    inside = [n for n in names if n.startswith("src/")]
    assert all(
        n.startswith(("src/faceforge/", "src/faceforge.egg-info")) or n == "src/faceforge" for n in inside
    ), [n for n in inside if not n.startswith("src/faceforge")]
    bad = [n for n in names if n.endswith((".pyc", ".ckpt", ".onnx", ".npz", ".jpg", ".png", ".bin"))]
    assert not bad, bad


def test_wheel_holds_the_package_and_its_data(dists: dict[str, Path]) -> None:
    base = f"faceforge-{faceforge.__version__}"
    assert dists["wheel"].name == f"{base}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = zf.namelist()
        meta = email.parser.Parser().parsestr(zf.read(f"{base}.dist-info/METADATA").decode())
        entry = zf.read(f"{base}.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"faceforge", f"{base}.dist-info"}
    for f in ("py.typed", "serve/static/index.html", "models/calibrations/dlib.json", "cli/main.py"):
        assert f"faceforge/{f}" in names, f
    assert not any("loadtest" in n or n.endswith(".pyc") for n in names)
    assert f"{base}.dist-info/licenses/LICENSE" in names
    assert meta["Version"] == faceforge.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    core = {_req_name(r) for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert core == CORE
    assert "faceforge = faceforge.cli.main:main" in entry


# --------------------------------------------------------------------------------------------------
# the inference verbs without the training stack

_BLOCKED_RUN = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, sys

    BLOCKED = set(sys.argv[2].split(","))
    tried = []

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                tried.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from faceforge.cli.main import build_parser, main

    out = {}
    for argv in (["--help"], ["--version"], ["models", "list", "--json"], ["train", "--print_config"]):
        buf, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            code = main(argv)
        out[" ".join(argv)] = {"code": code, "out": buf.getvalue(), "err": err.getvalue()}
    if sys.argv[1] != "-":
        from faceforge.cli.serve_cmd import build_app
        from fastapi.testclient import TestClient

        args = build_parser().parse_args(["serve", "--model", sys.argv[1], "--detector", "none"])
        with TestClient(build_app(args)) as client:
            out["healthz"] = client.get("/healthz").json()
    out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    out["tried"] = sorted(set(tried))
    print("RESULT " + json.dumps(out))
    """
)


def _tiny_onnx(path: Path) -> Path:
    """A 2-layer backbone with a FaceConfig, exported by faceforge (metadata and all)."""
    import torch

    from faceforge.export.onnx import export_onnx
    from faceforge.models.face_cfg import FaceConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 16),
    ).eval()
    model.face_cfg = FaceConfig(input_size=(112, 112), embedding_size=16)  # type: ignore[assignment]
    return export_onnx(model, path, name="tiny")


@pytest.mark.slow  # a fresh interpreter imports torch, and `models list` sizes every backbone: ~15-35 s
def test_inference_verbs_work_without_the_training_extra(tmp_path: Path) -> None:
    serve_ok = all(importlib.util.find_spec(m) for m in ("fastapi", "httpx", "onnx", "onnxruntime"))
    model = str(_tiny_onnx(tmp_path / "tiny.onnx")) if serve_ok else "-"
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_RUN, model, ",".join(TRAINING_MODULES)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads(line.removeprefix("RESULT "))
    assert res["--help"]["code"] == 0 and "serve" in res["--help"]["out"]
    assert res["--version"] == {"code": 0, "out": f"faceforge {faceforge.__version__}\n", "err": ""}
    listed = res["models list --json"]
    assert listed["code"] == 0, listed["err"]
    table = json.loads(listed["out"])
    assert {r["name"] for r in table["backbones"]} >= {"iresnet50", "ghostfacenetv1", "mobilefacenet"}
    # backbones that need timm are listed with the extra to install, not a crash
    for u in table["unavailable"]:
        assert 'pip install "faceforge[train]"' in u["reason"], u
    # a verb that needs the training extra says so in one line, exit 2
    train = res["train --print_config"]
    assert train["code"] in (0, 2), train
    if train["code"] == 2:
        assert train["err"].count("\n") == 1 and 'pip install "faceforge[train]"' in train["err"], train
    if serve_ok:
        assert res["healthz"]["status"] == "ok" and res["healthz"]["model"] == "tiny"
    assert res["loaded"] == [], res["loaded"]


def test_version_from_a_source_tree(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """``--version`` prints ``faceforge.__version__`` without asking installed distribution metadata
    (a source tree on ``sys.path`` has none, or a stale one)."""
    import importlib.metadata

    from faceforge.cli.main import main

    def nowhere(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", nowhere)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"faceforge {faceforge.__version__}\n"


# --------------------------------------------------------------------------------------------------
# the wheel in a clean venv (the CI step of issue #17)


def _core_closure() -> list[importlib.metadata.Distribution]:
    """The installed distributions the core requirements pull in, transitively (no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, seen, out = sorted(CORE), set(), []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional platform dependency this machine does not have
        out.append(dist)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def _link_core_dependencies(dest: Path) -> None:
    """Symlink the top-level files of the core closure into ``dest``: the venv sees these and nothing else
    of this environment (installing PyTorch afresh is ~3 GB and minutes: ``make dist-check`` does that)."""
    dest.mkdir()
    for dist in _core_closure():
        for f in dist.files or []:
            top = f.parts[0]
            if top == ".." or top == "__pycache__":
                continue  # console scripts, headers outside site-packages
            src = Path(dist.locate_file(top))
            if src.exists() and not (dest / top).exists():
                (dest / top).symlink_to(src, target_is_directory=src.is_dir())


@pytest.mark.slow  # installs the wheel (~3 s) and runs `models list` in a fresh interpreter (~15-35 s)
def test_wheel_installs_into_a_clean_venv_and_runs(dists: dict[str, Path], tmp_path: Path) -> None:
    import os
    import sysconfig
    import venv

    root = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    py = root / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
         str(dists["wheel"])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    assert site.is_dir() and site != Path(sysconfig.get_paths()["purelib"])
    _link_core_dependencies(tmp_path / "core")
    (site / "_faceforge_core_deps.pth").write_text(str(tmp_path / "core") + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(OMP_NUM_THREADS="1", FACEFORGE_HOME=str(tmp_path / "home"))
    probe = (
        "import importlib.util, json, faceforge; "
        "print(json.dumps({'file': faceforge.__file__, "
        f"'extra': [m for m in {list(TRAINING_MODULES)!r} if importlib.util.find_spec(m)]}})"
        ")"
    )

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)

    where = json.loads(run(str(py), "-c", probe).stdout)
    assert Path(where["file"]).resolve().is_relative_to(site.resolve()), where  # the wheel, not src/
    assert where["extra"] == [], where  # a clean venv: no module of the train extra is importable
    cli = root / "bin" / "faceforge"
    version = run(str(cli), "--version")
    assert (version.returncode, version.stdout) == (0, f"faceforge {faceforge.__version__}\n"), version.stderr
    listed = run(str(cli), "models", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    names = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"iresnet50", "mobilefacenet", "ghostfacenetv1"} <= names, listed.stdout[:2000]
