"""Evaluate one model on several verification sets, retrieval folders and degraded copies in one run.
A set is an insightface ``.bin`` or a pair list with its image folder (:func:`parse_set_spec`:
``NAME=PATH.bin``, ``PATH.bin``, ``NAME=PAIRS[:ROOT]``; :data:`KNOWN_SETS` names recognised in file
and folder names), turned into the model's crops by :class:`faceforge.eval.crops.FaceCropper` and
embedded through :class:`~faceforge.eval.cache.EmbeddingCache`. Entry points: :func:`evaluate_sets`,
:func:`evaluate_retrieval_folders`, :func:`write_checkpoint_calibration`. Details:
docs/evaluation.md, "faceforge eval: many sets, one report" and "Verification sets".
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError
from faceforge.eval.cache import EmbeddingCache, file_sha256
from faceforge.eval.crops import AlignPlan, Crops, FaceCropper
from faceforge.eval.verification import (
    EmbedFn,
    PairImages,
    accuracy_at_threshold,
    embed_images,
    evaluate_embeddings,
    flip_mode,
)

__all__ = [
    "KNOWN_SETS",
    "SetSpec",
    "evaluate_retrieval_folders",
    "evaluate_sets",
    "guess_set_name",
    "load_sr_module",
    "parse_set_spec",
    "write_checkpoint_calibration",
]

KNOWN_SETS = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp")
#: file stems that say nothing about the set: such a pair list is named after its folder
GENERIC_STEMS = ("pairs", "pair", "pairs_list", "pairlist", "view2", "pairs_view2")


@dataclass(frozen=True)
class SetSpec:
    """One verification set: ``kind`` is ``"bin"`` or ``"pairs"``; ``root`` only for pair lists."""

    name: str
    path: Path
    kind: str
    root: Path | None = None


def guess_set_name(path: str | os.PathLike[str]) -> str:
    """``lfw``, ``cfp_fp``, ... when the file (or, for a generic ``pairs.txt``, its folder) names a
    known set; else the folder's name for a generic stem (``pairs``, ...) and the file's stem otherwise.

    Used for ``--sets``, ``--pairs`` and ``--bin`` alike, so one file gets one name."""
    p = Path(path).expanduser()
    for cand in (p.stem, p.parent.name):
        norm = re.sub(r"[^a-z0-9]+", "_", cand.lower()).strip("_")
        for known in sorted(KNOWN_SETS, key=len, reverse=True):
            if norm == known or norm.startswith(known + "_") or norm.endswith("_" + known):
                return known
        # agedb30 / cfpfp written without separators
        squashed = norm.replace("_", "")
        for known in KNOWN_SETS:
            if squashed == known.replace("_", ""):
                return known
    stem_norm = re.sub(r"[^a-z0-9]+", "_", p.stem.lower()).strip("_")
    if stem_norm in GENERIC_STEMS:
        folder = p.resolve().parent.name if p.parent.name in ("", ".") else p.parent.name
        if folder:
            return folder
    return p.stem


def parse_set_spec(spec: str) -> SetSpec:
    """Parse ``[NAME=]PATH.bin`` or ``[NAME=]PAIRS[:ROOT]`` (see docs/evaluation.md, "faceforge eval")."""
    name = None
    rest = spec
    m = re.match(r"^([A-Za-z0-9_.+-]+)=(.+)$", spec)
    if m and not Path(spec).exists():
        name, rest = m.group(1), m.group(2)
    path, root = Path(rest).expanduser(), None
    if not path.is_file():
        # PAIRS:ROOT -- split at the first ':' whose left side is an existing file.
        for i in [k for k, c in enumerate(rest) if c == ":"]:
            left = Path(rest[:i]).expanduser()
            if left.is_file():
                path, root = left, Path(rest[i + 1 :]).expanduser()
                break
        else:
            raise FaceforgeError(
                f"set {spec!r}: {rest!r} is not an existing file "
                "(expected NAME=PATH.bin or NAME=PAIRS.txt[:IMAGE_ROOT])"
            )
    kind = "bin" if path.suffix.lower() == ".bin" else "pairs"
    if kind == "bin" and root is not None:
        raise FaceforgeError(f"set {spec!r}: a .bin holds its images; drop ':{root}'")
    if root is not None and not root.is_dir():
        raise FaceforgeError(f"set {spec!r}: image root {root} is not a folder")
    return SetSpec(name or guess_set_name(path), path, kind, root)


def unique_names(specs: Sequence[SetSpec]) -> list[SetSpec]:
    """Rename repeated names ``lfw``, ``lfw-2``, ... so report rows never overwrite each other."""
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        n = seen.get(s.name, 0) + 1
        seen[s.name] = n
        out.append(s if n == 1 else replace(s, name=f"{s.name}-{n}"))
    return out


# --------------------------------------------------------------------------------------------------
# opening sets


@dataclass
class _Opened:
    spec: SetSpec
    issame: np.ndarray
    index_a: np.ndarray
    index_b: np.ndarray
    n_images: int
    identity: dict[str, Any]
    paths: list[str] | None = None  # image files of a pair list (None for a .bin)
    bin_set: Any = None


def _open_bin(spec: SetSpec) -> _Opened:
    from faceforge.data.binset import read_bin

    bs = read_bin(spec.path)
    n = len(bs.issame)
    ident = {"type": "bin", "sha256": file_sha256(spec.path)}
    return _Opened(spec, bs.issame, np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), 2 * n, ident, None, bs)


def _listing_hash(paths: Sequence[str]) -> str:
    listing = []
    for p in paths:
        st = os.stat(p)
        listing.append(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()


def _open_pairs(spec: SetSpec) -> _Opened:
    from faceforge.data.pairs import read_pairs

    pairs = read_pairs(spec.path, root=spec.root)
    paths = pairs.unique_paths()
    where = {p: i for i, p in enumerate(paths)}
    ident = {"type": "pairs", "sha256": file_sha256(spec.path), "images": _listing_hash(paths)}
    ia = np.array([where[p] for p in pairs.paths_a])
    ib = np.array([where[p] for p in pairs.paths_b])
    return _Opened(spec, pairs.issame, ia, ib, len(paths), ident, list(paths))


def open_set(spec: SetSpec) -> _Opened:
    """Read a set's labels and identity (no image decoding yet)."""
    return _open_bin(spec) if spec.kind == "bin" else _open_pairs(spec)


def _bin_plan(model: ModelInfo) -> AlignPlan:
    t = model.face_cfg.template
    h, w = model.hw
    if t == "none":
        return AlignPlan("whole-image")
    if t == "arcface" and h == w:
        return AlignPlan("aligned")
    # A .bin holds square arcface-aligned crops; another template (or a non-square arcface crop) is
    # reached by one more similarity warp from the arcface points, never by stretching the image.
    return AlignPlan("realigned", identity={"from": "arcface"})


def _bin_crops(opened: _Opened, model: ModelInfo, plan: AlignPlan) -> Crops:
    """The model's crops of a ``.bin``: resized, or warped from the arcface template to the model's."""
    from faceforge.align import crop_face
    from faceforge.align.templates import get_template

    bs = opened.bin_set
    h, w = model.hw
    if plan.method != "realigned":
        arr, ok = bs.decode_all((h, w))
    else:
        raw, ok = bs.decode_all(None)
        ih, iw = raw.shape[1:3]
        src = get_template("arcface", (iw, ih))  # where the 5 points sit in an arcface crop
        arr = np.zeros((len(raw), h, w, 3), np.uint8)
        for i in np.flatnonzero(ok):
            arr[i] = crop_face(raw[i], src, model.face_cfg)
    bad = [f"{opened.spec.path}[{i}]" for i in np.flatnonzero(~ok)]
    return Crops(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), bad, plan)


def _plan(opened: _Opened, model: ModelInfo, cropper: FaceCropper) -> AlignPlan:
    if opened.paths is None:
        return _bin_plan(model)
    return cropper.plan(opened.paths, opened.spec.name)


def _load(opened: _Opened, model: ModelInfo, cropper: FaceCropper, plan: AlignPlan) -> Crops:
    if opened.paths is None:
        return _bin_crops(opened, model, plan)
    return cropper.crops(opened.paths, plan, opened.spec.name)


# --------------------------------------------------------------------------------------------------
# verification


@dataclass
class ModelInfo:
    """What the suite needs of a model: ``embed`` (uint8 RGB NCHW -> raw embeddings) and its facts.

    ``size`` is the input side or ``(height, width)``; ``face_cfg`` (built from ``size``, ``color``
    and ``template`` when not given) tells the crop loader the template and size. ``fingerprint``
    keys the embedding cache ("" disables it for this model).
    """

    embed: EmbedFn
    size: int | tuple[int, int]
    color: str = "RGB"
    fingerprint: str = ""
    template: str = "arcface"
    face_cfg: Any = None

    def __post_init__(self) -> None:
        from faceforge.models.face_cfg import FaceConfig

        if self.face_cfg is None:
            self.face_cfg = FaceConfig(input_size=self.hw, color=self.color, template=self.template)
        else:
            self.size = tuple(int(v) for v in self.face_cfg.input_size)  # type: ignore[assignment]
            self.color, self.template = self.face_cfg.color, self.face_cfg.template

    @property
    def hw(self) -> tuple[int, int]:
        """``(height, width)`` of the model's input."""
        if isinstance(self.size, (int, np.integer)):
            return int(self.size), int(self.size)
        h, w = (int(v) for v in self.size)
        return h, w

    @classmethod
    def from_model(cls, model: Any) -> ModelInfo:
        """From a loaded model with ``torch_embed()``, ``face_cfg`` and ``fingerprint``
        (:class:`faceforge.infer.loading.EmbeddingModel`)."""
        cfg = model.face_cfg
        h, w = (int(v) for v in cfg.input_size)
        return cls(model.torch_embed(), (h, w), cfg.color, model.fingerprint, cfg.template, cfg)


def _embeddings(
    opened: _Opened,
    model: ModelInfo,
    plan: AlignPlan,
    flip: str,
    batch_size: int,
    cache: EmbeddingCache,
    load: Callable[[], Crops],
    variant: str = "clean",
) -> tuple[np.ndarray, dict[str, Any]]:
    """(embeddings of every image of the set, row facts: undecodable images and alignment), cached."""
    parts = {
        "what": "verification",
        "model": model.fingerprint,
        "set": opened.identity,
        "flip": flip,
        "size": list(model.hw),
        "color": model.color,
        "template": model.template,
        "align": plan.key(),
        "variant": variant,
    }
    emb = cache.get(parts) if model.fingerprint else None
    if emb is not None and emb.shape[0] == opened.n_images:
        extra = cache.info(parts).get("extra", {})
        if "alignment" in extra:
            return emb, dict(extra)
    crops = load()
    emb = embed_images(model.embed, crops.images, batch_size, flip, desc=f"{opened.spec.name} ({variant})")
    facts = {"undecodable_images": len(crops.bad_paths), **crops.facts()}
    if model.fingerprint:
        cache.put(parts, emb, facts)
    return emb, facts


def load_sr_module(spec: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Import ``module:attr`` (a super-resolution ``nn.Module``, a class or factory taking no
    arguments that returns one, or a function ``float [0,1] NCHW small -> full size``)."""
    if ":" not in spec:
        raise FaceforgeError(f"--sr {spec!r}: expected MODULE:CALLABLE, e.g. mypkg.sr:ESRGANx4")
    mod_name, attr = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise FaceforgeError(f"--sr {spec!r}: cannot import module {mod_name!r} ({e})") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FaceforgeError(f"--sr {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        obj = obj()
    if isinstance(obj, torch.nn.Module):
        obj.eval()
        return obj
    if callable(obj):
        return obj
    raise FaceforgeError(f"--sr {spec!r}: {attr!r} is a {type(obj).__name__}, not a module or callable")


def evaluate_sets(
    specs: Sequence[SetSpec],
    model: ModelInfo,
    flip: bool | str = "sum",
    mode: str = "grid",
    n_folds: int = 10,
    batch_size: int = 256,
    cache: EmbeddingCache | None = None,
    baseline: bool = False,
    lowres_factors: Sequence[float] = (),
    sr: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    detector: Any = "auto",
    detector_model: str | os.PathLike[str] | None = None,
    crop_cache: Any = None,
    warn: Callable[[str], None] | None = None,
    stored_threshold: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Verification rows for every set (plus ``"<set> (raw pixels)"`` and ``"<set> x<f>[+sr]"``).

    ``stored_threshold``: the model's calibrated cosine threshold; each set's row then also says how
    many of its pairs that fixed threshold decides right (``accuracy_at_stored_threshold``), the number
    a user of ``verify`` gets, beside the 10-fold accuracy whose thresholds are fitted on the set.

    ``detector`` / ``detector_model`` say how the images of pair lists become crops
    (:class:`~faceforge.eval.crops.FaceCropper`; ``"auto"``, ``"none"``, a name, a file or a
    ``Detector``); ``crop_cache`` is a :class:`~faceforge.eval.cache.CropCache` for detected crops;
    ``warn`` receives warning lines (default: stderr). Each row carries ``alignment``, ``detector``,
    ``undecodable_images`` and, for detected sets, ``no_face_images``, ``no_face_rule`` and
    ``no_face_examples``.
    """
    from faceforge.eval.lowres import _super_resolve, degrade
    from faceforge.eval.verification import pixel_baseline

    fm = flip_mode(flip)
    cache = cache or EmbeddingCache(None)
    cropper = FaceCropper(model.face_cfg, detector, detector_model, crop_cache, warn)
    rows: dict[str, dict[str, Any]] = {}
    for spec in unique_names(specs):
        opened = open_set(spec)
        plan = _plan(opened, model, cropper)
        data = PairImages(
            torch.empty(0, dtype=torch.uint8), opened.index_a, opened.index_b, opened.issame, []
        )
        loaded: list[Crops] = []

        def load(opened: _Opened = opened, plan: AlignPlan = plan, loaded: list[Crops] = loaded) -> Crops:
            if not loaded:
                loaded.append(_load(opened, model, cropper, plan))
            return loaded[0]

        if baseline or lowres_factors:
            data.images, data.bad_paths = load().images, load().bad_paths
        emb, facts = _embeddings(opened, model, plan, fm, batch_size, cache, load)
        res = evaluate_embeddings(emb, data, n_folds, mode)
        res.update(
            kind="verification", set=str(spec.path), flip=fm, embedding_size=int(emb.shape[1]),
            n_images=opened.n_images, **facts,
        )  # fmt: skip
        if stored_threshold is not None:
            res["stored_threshold"] = float(stored_threshold)
            res["accuracy_at_stored_threshold"] = accuracy_at_threshold(emb, data, stored_threshold)
        rows[spec.name] = res
        if baseline:
            rows[f"{spec.name} (raw pixels)"] = {
                **pixel_baseline(data, n_folds, mode),
                "kind": "verification",
            }
        for f in lowres_factors:
            deg = degrade(data.images, f)
            crops_f = Crops(deg, data.bad_paths, plan)
            e, _ = _embeddings(opened, model, plan, fm, batch_size, cache, lambda c=crops_f: c, f"x{f:g}")
            rows[f"{spec.name} x{f:g}"] = {
                **evaluate_embeddings(e, data, n_folds, mode), "kind": "verification", "lowres_factor": f,
            }  # fmt: skip
            if sr is not None and f != 1:
                up = _super_resolve(sr, data.images, f, "bilinear", batch_size)
                # A user module is opaque (it may change between runs): its output is never cached.
                e = embed_images(model.embed, up, batch_size, fm, desc=f"{spec.name} x{f:g}+sr")
                rows[f"{spec.name} x{f:g}+sr"] = {
                    **evaluate_embeddings(e, data, n_folds, mode), "kind": "verification", "lowres_factor": f,
                    "super_resolution": True,
                }  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------------
# retrieval


def _folder_images(root: Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    from faceforge.data.folder import image_folder_samples

    classes, samples = image_folder_samples(root)
    paths = [p for p, _ in samples]
    labels = np.array([classes[lab] for _, lab in samples])
    ident = {"type": "folder", "images": _listing_hash(paths)}
    return paths, labels, ident


def _embed_folder(
    root: Path, model: ModelInfo, flip: str, batch_size: int, cache: EmbeddingCache, cropper: FaceCropper
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    paths, labels, ident = _folder_images(root)
    plan = cropper.plan(paths, root.name)
    parts = {"what": "folder", "model": model.fingerprint, "set": ident, "flip": flip, "size": list(model.hw),
             "color": model.color, "template": model.template, "align": plan.key()}  # fmt: skip
    emb = cache.get(parts) if model.fingerprint else None
    if emb is not None and len(emb) == len(paths):
        extra = cache.info(parts).get("extra", {})
        if "alignment" in extra:
            return emb, labels, dict(extra)
    crops = cropper.crops(paths, plan, root.name)
    if crops.bad_paths:
        raise FaceforgeError(
            f"{len(crops.bad_paths)} image(s) under {root} cannot be decoded; first: {crops.bad_paths[0]}"
        )
    emb = embed_images(model.embed, crops.images, batch_size, flip, desc=root.name)
    facts = crops.facts()
    if model.fingerprint:
        cache.put(parts, emb, facts)
    return emb, labels, facts


def evaluate_retrieval_folders(
    model: ModelInfo,
    split: str | os.PathLike[str] | None = None,
    query: str | os.PathLike[str] | None = None,
    gallery: str | os.PathLike[str] | None = None,
    flip: bool | str = "sum",
    ks: Sequence[int] = (1, 5, 10),
    index: str = "flat",
    batch_size: int = 256,
    cache: EmbeddingCache | None = None,
    *,
    detector: Any = "auto",
    detector_model: str | os.PathLike[str] | None = None,
    crop_cache: Any = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Retrieval metrics (:func:`faceforge.eval.retrieval.retrieval_metrics`) of ImageFolder trees.

    ``split``: one folder, every image queries all others (leave-one-out). ``query`` + ``gallery``:
    two folders; labels are the identity sub-folder names. Images become crops as in
    :func:`evaluate_sets` (``detector`` ...); the row's ``images`` says how, per folder.
    """
    from faceforge.eval.retrieval import retrieval_metrics

    fm = flip_mode(flip)
    cache = cache or EmbeddingCache(None)
    cropper = FaceCropper(model.face_cfg, detector, detector_model, crop_cache, warn)
    if (split is None) == (query is None and gallery is None) or (
        split is None and (query is None or gallery is None)
    ):
        raise FaceforgeError("retrieval needs either a split folder or both a query and a gallery folder")
    if split is not None:
        emb, lab, facts = _embed_folder(Path(split), model, fm, batch_size, cache, cropper)
        res = retrieval_metrics(emb, lab, ks=ks, index=index)
        res["query"] = res["gallery"] = str(split)
        res["images"] = {"split": facts}
    else:
        q, ql, qf = _embed_folder(Path(query), model, fm, batch_size, cache, cropper)  # type: ignore[arg-type]
        g, gl, gf = _embed_folder(Path(gallery), model, fm, batch_size, cache, cropper)  # type: ignore[arg-type]
        res = retrieval_metrics(q, ql, g, gl, ks=ks, index=index)
        res["query"], res["gallery"] = str(query), str(gallery)
        res["images"] = {"query": qf, "gallery": gf}
    res["recall_at_k"] = {str(k): v for k, v in res["recall_at_k"].items()}
    res.update(kind="retrieval", flip=fm)
    return res


# --------------------------------------------------------------------------------------------------
# calibration into the checkpoint


def write_checkpoint_calibration(checkpoint: str | os.PathLike[str], calibration: dict[str, Any]) -> Path:
    """Store ``calibration`` as ``checkpoint["calibration"]``, keeping every other key.

    Written to a temporary file next to the checkpoint, fsync'd and moved over it with ``os.replace``, so a
    crash never leaves a truncated checkpoint; only plain types are added, so the file still loads
    with ``torch.load(weights_only=True)``.
    """
    import io

    from faceforge.fileio import atomic_write_bytes
    from faceforge.models.checkpoint import read_checkpoint

    p = Path(checkpoint)
    ckpt = read_checkpoint(p)
    ckpt["calibration"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in calibration.items()}
    buf = io.BytesIO()  # serialised in memory first: a full disk is then an OSError (ENOSPC), one line
    torch.save(ckpt, buf)
    # fsync'd temporary + rename; keeps the checkpoint's own permissions
    return atomic_write_bytes(p, buf.getvalue(), mode=p.stat().st_mode & 0o7777)
