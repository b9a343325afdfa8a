"""IJB-B / IJB-C template-based face verification (1:1) and identification (1:N): the protocol of
insightface's ``evaluation/IJB`` re-implemented on the IJB release layout (Whitelam et al., "IARPA
Janus Benchmark-B Face Dataset", CVPRW 2017; Maze et al., "IARPA Janus Benchmark-C", ICB 2018), 1:N
as open-set identification (Grother et al., NIST IR 8271). Entry points: :func:`read_ijb_meta`,
:func:`embed_ijb`, :func:`pool_templates`, :func:`evaluate_ijb_features`, :func:`evaluate_ijb`.
Details (layout, pooling, TAR@FAR and TPIR@FPIR rules): docs/evaluation.md, "faceforge eval ijb".
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.eval.metrics import _downsample_roc, equal_error_rate, roc_auc, roc_curve, tar_at_far
from faceforge.eval.verification import EmbedFn, embed_images, flip_mode
from faceforge.progress import progress_bar

__all__ = [
    "TARGETS",
    "IJBMeta",
    "embed_ijb",
    "evaluate_ijb",
    "evaluate_ijb_features",
    "find_ijb_dir",
    "pool_templates",
    "read_ijb_meta",
]

TARGETS = {"IJBB": "ijbb", "IJBC": "ijbc"}
_GALLERIES = {"IJBB": ("S1", "S2"), "IJBC": ("G1", "G2")}
IJB_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
IJB_FPIRS: tuple[float, ...] = (1e-2, 1e-1)
IJB_RANKS: tuple[int, ...] = (1, 5, 10)


def _check_target(target: str) -> str:
    t = str(target).upper().replace("-", "")
    if t not in TARGETS:
        raise FaceforgeError(f"IJB target {target!r} is not one of {list(TARGETS)}{did_you_mean(t, TARGETS)}")
    return t


def find_ijb_dir(root: str | os.PathLike[str], target: str = "IJBC") -> Path:
    """The folder holding ``meta/`` and ``loose_crop/``: ``root/<target>`` or ``root`` itself."""
    t = _check_target(target)
    base = Path(root).expanduser()
    for cand in (base / t, base):
        if (cand / "meta").is_dir():
            return cand
    raise FaceforgeError(
        f"IJB root {base}: neither {base / t / 'meta'} nor {base / 'meta'} exists "
        f"(expected the insightface IJB layout: {t}/meta/{TARGETS[t]}_face_tid_mid.txt, {t}/loose_crop/)"
    )


# --------------------------------------------------------------------------------------------------
# meta files


@dataclass
class IJBMeta:
    """The parsed meta files of one IJB target (layout: docs/evaluation.md, "faceforge eval ijb")."""

    root: Path
    target: str
    image_names: list[str]
    templates: np.ndarray  # int64 [N] template id of each image
    medias: np.ndarray  # int64 [N] media id of each image
    landmarks: np.ndarray  # float32 [N, 5, 2]
    faceness: np.ndarray  # float32 [N]
    pair_t1: np.ndarray  # int64 [P]
    pair_t2: np.ndarray
    pair_label: np.ndarray  # bool [P]
    galleries: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (tid, sid)
    probes: tuple[np.ndarray, np.ndarray] | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def image_dir(self) -> Path:
        """``loose_crop/``."""
        return self.root / "loose_crop"

    def fingerprint(self) -> str:
        """SHA-256 over the meta files' bytes: identifies the data for the embedding cache."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.name.encode() + b"\0")
            h.update(f.read_bytes())
        h.update(str(self.image_dir.resolve()).encode())
        return h.hexdigest()


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise FaceforgeError(f"IJB meta file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FaceforgeError(f"cannot read IJB meta file {path}: {e}") from None
    out = [(i + 1, ln.split()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not out:
        raise FaceforgeError(f"IJB meta file {path} is empty")
    return out


def _int(tok: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise FaceforgeError(f"{path}:{lineno}: {what} {tok!r} is not an integer") from None


def _float(tok: str, path: Path, lineno: int, what: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise FaceforgeError(f"{path}:{lineno}: {what} {tok!r} is not a number") from None
    if not math.isfinite(v):
        raise FaceforgeError(f"{path}:{lineno}: {what} {tok!r} is not finite")
    return v


def _fields(path: Path, lineno: int, toks: list[str], n: int, layout: str) -> None:
    if len(toks) != n:
        raise FaceforgeError(
            f"{path}:{lineno}: expected {n} fields '{layout}', got {len(toks)}: {' '.join(toks)!r}"
        )


def _read_csv_ids(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(TEMPLATE_ID, SUBJECT_ID) per row of an IJB 1:N CSV (header row required)."""
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise FaceforgeError(f"cannot read IJB 1:N file {path}: {e}") from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise FaceforgeError(f"IJB 1:N file {path} is empty")
        cols = [h.strip().upper() for h in header]
        if "TEMPLATE_ID" not in cols or "SUBJECT_ID" not in cols:
            raise FaceforgeError(
                f"{path}:1: header {header} lacks TEMPLATE_ID and/or SUBJECT_ID "
                "(expected e.g. TEMPLATE_ID,SUBJECT_ID,FILENAME,...)"
            )
        it, isub = cols.index("TEMPLATE_ID"), cols.index("SUBJECT_ID")
        tids, sids = [], []
        for row in reader:
            lineno = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) <= max(it, isub):
                raise FaceforgeError(
                    f"{path}:{lineno}: expected at least {max(it, isub) + 1} columns, got {len(row)}"
                )
            tids.append(_int(row[it].strip(), path, lineno, "TEMPLATE_ID"))
            sids.append(_int(row[isub].strip(), path, lineno, "SUBJECT_ID"))
    if not tids:
        raise FaceforgeError(f"IJB 1:N file {path} has a header but no rows")
    return np.asarray(tids, np.int64), np.asarray(sids, np.int64)


def read_ijb_meta(root: str | os.PathLike[str], target: str = "IJBC", check_images: bool = True) -> IJBMeta:
    """Parse and cross-check the meta files of ``target`` under ``root`` (docs/evaluation.md, "eval ijb").

    Every error names the file and line: wrong field counts, non-integer ids, non-numeric landmarks,
    labels other than 0/1, an image without landmarks, a pair or 1:N template without images, and
    (``check_images``) images missing from ``loose_crop/``. The 1:N files are optional as a whole.
    """
    t = _check_target(target)
    d = find_ijb_dir(root, t)
    pre = TARGETS[t]
    meta = d / "meta"
    f_tid = meta / f"{pre}_face_tid_mid.txt"
    f_pair = meta / f"{pre}_template_pair_label.txt"
    f_pts = meta / f"{pre}_name_5pts_score.txt"

    names: list[str] = []
    tids: list[int] = []
    mids: list[int] = []
    name_line: dict[str, int] = {}
    for lineno, toks in _lines(f_tid):
        _fields(f_tid, lineno, toks, 3, "image_name template_id media_id")
        if toks[0] in name_line:
            raise FaceforgeError(
                f"{f_tid}:{lineno}: image {toks[0]!r} is listed twice (first at line {name_line[toks[0]]})"
            )
        name_line[toks[0]] = lineno
        names.append(toks[0])
        tids.append(_int(toks[1], f_tid, lineno, "template id"))
        mids.append(_int(toks[2], f_tid, lineno, "media id"))

    pts: dict[str, tuple[list[float], float]] = {}
    for lineno, toks in _lines(f_pts):
        _fields(f_pts, lineno, toks, 12, "image_name x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 faceness")
        coords = [_float(v, f_pts, lineno, "landmark coordinate") for v in toks[1:11]]
        pts[toks[0]] = (coords, _float(toks[11], f_pts, lineno, "faceness score"))
    lms = np.zeros((len(names), 5, 2), np.float32)
    score = np.zeros(len(names), np.float32)
    for i, n in enumerate(names):
        got = pts.get(n)
        if got is None:
            raise FaceforgeError(
                f"{f_pts}: no landmarks for image {n!r} (listed in {f_tid.name}:{name_line[n]})"
            )
        lms[i] = np.asarray(got[0], np.float32).reshape(5, 2)
        score[i] = got[1]

    templates = np.asarray(tids, np.int64)
    known_t = set(tids)
    t1: list[int] = []
    t2: list[int] = []
    lab: list[bool] = []
    for lineno, toks in _lines(f_pair):
        _fields(f_pair, lineno, toks, 3, "template_1 template_2 label")
        a = _int(toks[0], f_pair, lineno, "template id")
        b = _int(toks[1], f_pair, lineno, "template id")
        lv = _int(toks[2], f_pair, lineno, "label")
        if lv not in (0, 1):
            raise FaceforgeError(f"{f_pair}:{lineno}: label {toks[2]!r} is not 0 or 1")
        for tv in (a, b):
            if tv not in known_t:
                raise FaceforgeError(f"{f_pair}:{lineno}: template {tv} has no image in {f_tid.name}")
        t1.append(a)
        t2.append(b)
        lab.append(bool(lv))

    files = [f_tid, f_pair, f_pts]
    galleries: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    probes = None
    g_files = [meta / f"{pre}_1N_gallery_{g}.csv" for g in _GALLERIES[t]]
    p_file = meta / f"{pre}_1N_probe_mixed.csv"
    if p_file.is_file() or any(f.is_file() for f in g_files):
        for f in [*g_files, p_file]:
            if not f.is_file():
                raise FaceforgeError(
                    f"IJB 1:N meta file {f} does not exist (the 1:N protocol needs "
                    f"{', '.join(x.name for x in [*g_files, p_file])})"
                )
        for g, f in zip(_GALLERIES[t], g_files):
            galleries[g] = _read_csv_ids(f)
        probes = _read_csv_ids(p_file)
        for f, (tv, _) in [*zip(g_files, galleries.values()), (p_file, probes)]:
            missing = np.setdiff1d(tv, templates)
            if missing.size:
                raise FaceforgeError(
                    f"{f}: template {int(missing[0])} has no image in {f_tid.name} "
                    f"({missing.size} such templates)"
                )
        files += [*g_files, p_file]

    if check_images:
        img_dir = d / "loose_crop"
        for n in names:
            if not (img_dir / n).is_file():
                raise FaceforgeError(f"{f_tid}:{name_line[n]}: image {n!r} does not exist in {img_dir}")
    return IJBMeta(
        d, t, names, templates, np.asarray(mids, np.int64), lms, score,
        np.asarray(t1, np.int64), np.asarray(t2, np.int64), np.asarray(lab, bool), galleries, probes, files,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# images -> features


def _aligned_batch(meta: IJBMeta, idx: Sequence[int], size: tuple[int, int], template: str) -> torch.Tensor:
    """RGB uint8 NCHW crops of ``idx`` (the model's colour order is applied when it embeds them)."""
    from faceforge.align import crop_face
    from faceforge.align.io import read_image
    from faceforge.models.face_cfg import FaceConfig

    h, w = size
    cfg = FaceConfig(input_size=(h, w), template=template)
    out = np.empty((len(idx), h, w, 3), np.uint8)
    for j, i in enumerate(idx):
        out[j] = crop_face(read_image(meta.image_dir / meta.image_names[i]), meta.landmarks[i], cfg)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def embed_ijb(
    meta: IJBMeta,
    embed: EmbedFn,
    size: tuple[int, int] = (112, 112),
    template: str = "arcface",
    flip: bool | str = "sum",
    batch_size: int = 256,
    progress: bool | None = None,
) -> np.ndarray:
    """Image features ``[N, E]`` of every image in ``meta``, aligned to ``template`` at ``size`` (h, w).

    Images are read, aligned and embedded one batch at a time, so memory does not grow with the
    data set (IJB-C has 227k images).
    """
    mode = flip_mode(flip)
    n = len(meta.image_names)
    bar = progress_bar(n, f"{meta.target} images", enabled=progress, leave=False)
    out = []
    try:
        for s in range(0, n, batch_size):
            idx = range(s, min(s + batch_size, n))
            x = _aligned_batch(meta, idx, size, template)
            out.append(embed_images(embed, x, batch_size=len(idx), flip=mode, progress=False))
            bar.update(len(idx))
    finally:
        bar.close()
    return np.concatenate(out)


def pool_templates(
    feats: np.ndarray, templates: np.ndarray, medias: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Media-then-template pooling: ``(unique template ids, L2-normalised template features)``.

    Image features (times ``weights``, e.g. faceness) are averaged within each (template, media),
    the media features summed within each template, and the sums L2-normalised (float64).
    """
    x = np.asarray(feats, np.float64)
    if weights is not None:
        x = x * np.asarray(weights, np.float64)[:, None]
    t_ids, t_idx = np.unique(templates, return_inverse=True)
    # One group per (template, media): the lexsort puts each group's images next to each other.
    order = np.lexsort((medias, t_idx))
    ts, ms = t_idx[order], medias[order]
    new = np.r_[True, (ts[1:] != ts[:-1]) | (ms[1:] != ms[:-1])]
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, len(order)])
    media_mean = np.add.reduceat(x[order], starts, axis=0) / counts[:, None]
    t_of_media = ts[starts]
    t_starts = np.flatnonzero(np.r_[True, t_of_media[1:] != t_of_media[:-1]])
    tfeat = np.add.reduceat(media_mean, t_starts, axis=0)
    norms = np.linalg.norm(tfeat, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return t_ids, tfeat / norms


def _template_rows(t_ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    pos = np.searchsorted(t_ids, wanted)
    pos = np.minimum(pos, len(t_ids) - 1)
    bad = t_ids[pos] != wanted
    if bad.any():
        raise FaceforgeError(f"{what}: template {int(wanted[bad][0])} has no image features")
    return pos


def _verification_11(
    meta: IJBMeta, t_ids: np.ndarray, tfeat: np.ndarray, fars: Sequence[float]
) -> dict[str, Any]:
    ra = _template_rows(t_ids, meta.pair_t1, "1:1 pairs")
    rb = _template_rows(t_ids, meta.pair_t2, "1:1 pairs")
    scores = np.empty(len(ra), np.float64)
    step = 100_000  # bounded memory for IJB-C's 15.6M pairs
    for s in range(0, len(ra), step):
        scores[s : s + step] = np.einsum("ij,ij->i", tfeat[ra[s : s + step]], tfeat[rb[s : s + step]])
    same = meta.pair_label
    n_gen = int(same.sum())
    n_imp = len(same) - n_gen
    if n_gen == 0 or n_imp == 0:
        raise FaceforgeError(
            f"{meta.root / 'meta'}: the 1:1 pair file has {n_gen} genuine and {n_imp} impostor pairs; "
            "expected both"
        )
    fpr, tpr, thr = roc_curve(same, scores)
    eer, eer_thr = equal_error_rate(fpr, tpr, thr)
    tar: dict[str, float] = {}
    tar_thr: dict[str, float] = {}
    for f in sorted(fars):
        if f * n_imp < 1.0:  # not measurable with this many impostor pairs (see docs/evaluation.md)
            continue
        tar[str(f)], _, tar_thr[str(f)] = tar_at_far(fpr, tpr, thr, f)
    roc_fpr, roc_tpr = _downsample_roc(fpr, tpr, 2000)
    return {
        "tar_at_far": tar,
        "tar_at_far_threshold_cos": tar_thr,
        "auc": roc_auc(fpr, tpr),
        "eer": eer,
        "eer_threshold_cos": eer_thr,
        "roc_fpr": roc_fpr,
        "roc_tpr": roc_tpr,
        "n_pairs": len(same),
        "n_genuine": n_gen,
        "n_impostor": n_imp,
    }


def _identification(
    probe_feat: np.ndarray,
    probe_sub: np.ndarray,
    gal_feat: np.ndarray,
    gal_sub: np.ndarray,
    fpirs: Sequence[float],
    ranks: Sequence[int],
) -> dict[str, Any]:
    subjects, g_code = np.unique(gal_sub, return_inverse=True)
    n_sub = len(subjects)
    mated_code = np.searchsorted(subjects, probe_sub)
    mated_code = np.minimum(mated_code, n_sub - 1)
    mated = subjects[mated_code] == probe_sub
    s_mated = np.full(len(probe_feat), -np.inf)
    s_best_other = np.full(len(probe_feat), -np.inf)
    top = np.full(len(probe_feat), -np.inf)
    rank = np.zeros(len(probe_feat), np.int64)
    # A subject with several gallery templates scores its best one: columns grouped by subject code.
    order = np.argsort(g_code, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(g_code[order]) != 0])
    step = max(1, (1 << 24) // max(len(gal_feat), 1))
    for s in range(0, len(probe_feat), step):
        sim = probe_feat[s : s + step] @ gal_feat.T
        per_sub = np.maximum.reduceat(sim[:, order], starts, axis=1)
        rows = np.arange(len(sim))
        m = mated[s : s + step]
        code = mated_code[s : s + step]
        sm = np.where(m, per_sub[rows, code], -np.inf)
        other = per_sub.copy()
        other[rows[m], code[m]] = -np.inf
        s_mated[s : s + step] = sm
        s_best_other[s : s + step] = other.max(1)
        top[s : s + step] = per_sub.max(1)
        rank[s : s + step] = 1 + (other > sm[:, None]).sum(1)
    n_mated = int(mated.sum())
    non = top[~mated]
    out: dict[str, Any] = {"n_probes": len(probe_feat), "n_mated": n_mated, "n_non_mated": len(non)}
    out["rank_hits"] = {str(k): int(((rank <= k) & mated).sum()) for k in ranks}
    out["rank"] = {str(k): (out["rank_hits"][str(k)] / n_mated if n_mated else None) for k in ranks}
    correct = mated & (s_mated > s_best_other)
    tpir: dict[str, float] = {}
    thr: dict[str, float] = {}
    non_sorted = np.sort(non)[::-1]
    for f in sorted(fpirs):
        if len(non) == 0 or f * len(non) < 1.0 or n_mated == 0:
            continue
        t = float(non_sorted[math.ceil(len(non) * f) - 1])
        tpir[str(f)] = float((correct & (s_mated > t)).sum() / n_mated)
        thr[str(f)] = t
    out["tpir_at_fpir"] = tpir
    out["tpir_threshold_cos"] = thr
    return out


def evaluate_ijb_features(
    meta: IJBMeta,
    feats: np.ndarray,
    faceness: bool = True,
    fars: Sequence[float] = IJB_FARS,
    fpirs: Sequence[float] = IJB_FPIRS,
    ranks: Sequence[int] = IJB_RANKS,
) -> dict[str, dict[str, Any]]:
    """Rows ``{"<target> 1:1": ..., "<target> 1:N": ...}`` from image features ``[N, E]``.

    The 1:N row is there when the meta files of the 1:N protocol are.
    """
    x = np.asarray(feats)
    if x.ndim != 2 or len(x) != len(meta.image_names):
        raise FaceforgeError(
            f"image features have shape {tuple(x.shape)}; "
            f"expected [{len(meta.image_names)}, E] (one row per image)"
        )
    if not np.isfinite(x).all():
        raise FaceforgeError("image features contain NaN or Inf; the model is unusable")
    w = meta.faceness if faceness else None
    t_ids, tfeat = pool_templates(x, meta.templates, meta.medias, w)
    common = {"kind": "ijb", "faceness": bool(faceness), "n_images": len(x), "n_templates": len(t_ids)}
    rows: dict[str, dict[str, Any]] = {
        f"{meta.target} 1:1": {**common, "protocol": "1:1", **_verification_11(meta, t_ids, tfeat, fars)}
    }
    if meta.probes is not None:
        p_t, p_s = meta.probes
        p_ids, first = np.unique(p_t, return_index=True)
        probe_feat = tfeat[_template_rows(t_ids, p_ids, "1:N probes")]
        probe_sub = p_s[first]
        per_gallery: dict[str, Any] = {}
        for g, (g_t, g_s) in meta.galleries.items():
            g_ids, gfirst = np.unique(g_t, return_index=True)
            per_gallery[g] = _identification(
                probe_feat, probe_sub, tfeat[_template_rows(t_ids, g_ids, f"1:N gallery {g}")], g_s[gfirst],
                fpirs, ranks,
            )  # fmt: skip
        n_mated = sum(r["n_mated"] for r in per_gallery.values())
        rank = {
            str(k): (sum(r["rank_hits"][str(k)] for r in per_gallery.values()) / n_mated if n_mated else None)
            for k in ranks
        }
        tpir: dict[str, float] = {}
        for f in sorted(fpirs):
            vals = [r["tpir_at_fpir"].get(str(f)) for r in per_gallery.values()]
            if vals and all(v is not None for v in vals):
                tpir[str(f)] = float(np.mean(vals))
        rows[f"{meta.target} 1:N"] = {
            **common,
            "kind": "ijb_1n",
            "protocol": "1:N",
            "rank": rank,
            "tpir_at_fpir": tpir,
            "galleries": per_gallery,
            "n_probes": len(p_ids),
        }
    return rows


def evaluate_ijb(
    meta: IJBMeta,
    embed: EmbedFn,
    size: tuple[int, int] = (112, 112),
    template: str = "arcface",
    flip: bool | str = "sum",
    faceness: bool = True,
    batch_size: int = 256,
    features: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Embed (unless ``features`` are given) and evaluate; see :func:`evaluate_ijb_features`."""
    if features is None:
        features = embed_ijb(meta, embed, size, template, flip, batch_size)
    rows = evaluate_ijb_features(meta, features, faceness)
    for r in rows.values():
        r["flip"] = flip_mode(flip)
    return rows
