"""SynthObjects: a procedural, non-face image collection for classification by retrieval. Classes differ
by shape and structure, every object ID is one instance and every view a new pose, background and
lighting; colours are independent of the class and images are seeded per ``(seed, class, ID, view)``.
:class:`SynthObjects` draws images; :func:`write_objects` writes ``OUT/<class>/<class><ID>_<view>.jpg``
and ``objects.json``. Details: docs/data.md, "SynthObjects".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.data.synth.writer import _PARTIAL, _claim, _read_json
from faceforge.errors import FaceforgeError
from faceforge.fileio import atomic_write_bytes, write_bytes
from faceforge.progress import progress_bar

__all__ = ["MANIFEST", "OBJECT_CLASSES", "SynthObjects", "object_name", "write_objects"]

#: the catalogue, in order: ``classes=n`` uses the first ``n``
OBJECT_CLASSES = (
    "star",
    "ring",
    "stripes",
    "checker",
    "leaf",
    "cross",
    "spiral",
    "dots",
    "crescent",
    "arrow",
)
MANIFEST = "objects.json"
_SUB = 16  # OpenCV fixed-point drawing: 4 fractional bits
_SHIFT = 4


def _rgb(rng: np.random.Generator, v_lo: float = 0.3) -> np.ndarray:
    """A random colour (uniform hue, varied saturation and value) as float RGB 0..255."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.3, 1.0), rng.uniform(v_lo, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, np.float32) * 255


def _far_colour(rng: np.random.Generator, other: np.ndarray, min_dist: float) -> np.ndarray:
    """A random colour at least ``min_dist`` (RGB distance) from ``other`` (the farthest of 24 tries)."""
    best, best_d = None, -1.0
    for _ in range(24):
        c = _rgb(rng, 0.1)
        d = float(np.linalg.norm(c - other))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best  # type: ignore[return-value]


class _View:
    """The pose of one view: object units -> pixels (centre, radius in pixels, rotation, mirror)."""

    def __init__(self, size: int, rng: np.random.Generator, extent: float) -> None:
        self.size = size
        # ``extent``: the object's half-size in its own units, so elongated shapes fit like round ones.
        # The object spans 60 to 84 % of the image and stays inside it: at the 48 to 64 pixels a
        # small CPU model sees, smaller ones lose the details (veins, dots, spiral arms) that tell
        # classes apart, while the class-independent colours keep raw pixels a poor cue.
        self.radius = size * rng.uniform(0.30, 0.42) / extent
        jitter = size * 0.07
        self.cx = size / 2 + rng.uniform(-jitter, jitter)
        self.cy = size / 2 + rng.uniform(-jitter, jitter)
        self.theta = rng.uniform(0, 2 * math.pi)
        self.mirror = 1.0 if rng.uniform() < 0.5 else -1.0

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        """``[N, 2]`` object coordinates -> pixel coordinates."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        x, y = pts[:, 0] * self.mirror, pts[:, 1]
        return np.stack(
            [self.cx + self.radius * (c * x - s * y), self.cy + self.radius * (s * x + c * y)], axis=1
        )

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Object coordinates ``(u, v)`` of every pixel centre (for patterns drawn per pixel)."""
        ys, xs = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32) + 0.5
        dx, dy = (xs - self.cx) / self.radius, (ys - self.cy) / self.radius
        c, s = math.cos(self.theta), math.sin(self.theta)
        return (c * dx + s * dy) * self.mirror, -s * dx + c * dy

    def px(self, length: float) -> float:
        """An object-unit length in pixels."""
        return length * self.radius


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * _SUB).astype(np.int32).reshape(-1, 1, 2)


def _poly(size: int, polys: list[np.ndarray], view: _View) -> np.ndarray:
    """Anti-aliased float mask of filled polygons (even-odd: an inner ring cuts a hole)."""
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [_fixed(view.to_px(p)) for p in polys], 255, cv2.LINE_AA, _SHIFT)
    return m.astype(np.float32) / 255


def _lines(size: int, lines: list[np.ndarray], view: _View, width: float) -> np.ndarray:
    """Anti-aliased float mask of open polylines ``width`` object units thick."""
    m = np.zeros((size, size), np.uint8)
    t = max(1, round(view.px(width)))
    cv2.polylines(m, [_fixed(view.to_px(p)) for p in lines], False, 255, t, cv2.LINE_AA, _SHIFT)
    return m.astype(np.float32) / 255


def _circle(n: int, r: float = 1.0, cx: float = 0.0, cy: float = 0.0, aspect: float = 1.0) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * aspect * np.sin(t)], axis=1)


def _outline(kind: int, corner: float) -> np.ndarray:
    """Badge outlines shared by the pattern classes: disc, rounded square, hexagon."""
    if kind == 0:
        return _circle(64)
    if kind == 1:
        t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        e = 2 / (4 + 8 * corner)  # superellipse exponent: squarer for small ``corner``
        c, s = np.cos(t), np.sin(t)
        return 0.92 * np.stack([np.sign(c) * np.abs(c) ** e, np.sign(s) * np.abs(s) ** e], axis=1)
    return _circle(6)


def _soft(x: np.ndarray, px_per_unit: float) -> np.ndarray:
    """Anti-aliased step of a signed pattern value in object units (0.5 at 0)."""
    return np.clip(0.5 + x * px_per_unit, 0, 1)


# --------------------------------------------------------------------------------- the classes


def _instance(cls: str, rng: np.random.Generator) -> dict[str, Any]:
    """The proportions of one object of class ``cls`` (its own colours are drawn by the caller)."""
    if cls == "star":
        k = int(rng.integers(5, 9))
        return {
            "k": k,
            "inner": rng.uniform(0.38, 0.55),
            "wobble": rng.uniform(-0.06, 0.06, k),
            "hub": rng.uniform() < 0.4,
            "extent": 1.0,
        }
    if cls == "ring":
        return {
            "inner": rng.uniform(0.45, 0.72),
            "aspect": rng.uniform(0.8, 1.0),
            "rim": rng.uniform() < 0.35,
            "extent": 1.0,
        }
    if cls in ("stripes", "checker"):
        return {
            "outline": int(rng.integers(0, 3)),
            "corner": rng.uniform(0, 1),
            "angle": rng.uniform(0, math.pi),
            "bands": int(rng.integers(4, 8)) if cls == "stripes" else int(rng.integers(3, 6)),
            "extent": 1.0,
        }
    if cls == "leaf":
        return {
            "width": rng.uniform(0.3, 0.48),
            "power": rng.uniform(0.6, 1.0),
            "skew": rng.uniform(-0.3, 0.3),
            "veins": int(rng.integers(3, 7)),
            "slant": rng.uniform(0.5, 0.9),
            "extent": 1.15,
        }
    if cls == "cross":
        return {"half": rng.uniform(0.17, 0.3), "arms": rng.uniform(0.7, 1.0, 4), "extent": 1.0}
    if cls == "spiral":
        return {
            "turns": rng.uniform(1.8, 3.0),
            "width": rng.uniform(0.08, 0.13),
            "start": rng.uniform(0, 0.15),
            "extent": 1.0,
        }
    if cls == "dots":
        n = int(rng.integers(5, 10))
        r = rng.uniform(0.13, 0.19)
        pts: list[tuple[float, float]] = []
        while len(pts) < n:  # rejection sampling in the unit disc, dots never touching
            p = rng.uniform(-1 + r, 1 - r, 2)
            if np.hypot(*p) <= 1 - r and all(np.hypot(p[0] - a, p[1] - b) > 2.3 * r for a, b in pts):
                pts.append((float(p[0]), float(p[1])))
            if len(pts) < n and rng.uniform() < 0.002:  # crowded: settle for fewer
                n -= 1
        return {"r": r, "pts": pts, "two_tone": rng.uniform() < 0.3, "extent": 1.0}
    if cls == "crescent":
        return {"inner": rng.uniform(0.75, 0.95), "offset": rng.uniform(0.3, 0.55), "extent": 1.0}
    if cls == "arrow":
        return {
            "shaft": rng.uniform(0.1, 0.19),
            "head_w": rng.uniform(0.45, 0.7),
            "head_l": rng.uniform(0.35, 0.6),
            "extent": 1.0,
        }
    raise FaceforgeError(f"unknown object class {cls!r}; expected one of {', '.join(OBJECT_CLASSES)}")


def _layers(
    cls: str, p: dict[str, Any], view: _View, c1: np.ndarray, c2: np.ndarray
) -> list[tuple[Any, Any]]:
    """``[(mask [S, S], colour [3] or image [S, S, 3])]`` painted in order over the background."""
    s = view.size
    if cls == "star":
        k = p["k"]
        a = np.arange(2 * k) * math.pi / k
        rad = np.where(np.arange(2 * k) % 2 == 0, 1.0 + np.repeat(p["wobble"], 2)[: 2 * k], p["inner"])
        out = [(_poly(s, [np.stack([rad * np.cos(a), rad * np.sin(a)], 1)], view), c1)]
        if p["hub"]:
            out.append((_poly(s, [_circle(32, 0.22)], view), c2))
        return out
    if cls == "ring":
        outer, inner = _circle(72, 1.0, aspect=p["aspect"]), _circle(72, p["inner"], aspect=p["aspect"])
        out = [(_poly(s, [outer, inner], view), c1)]
        if p["rim"]:
            out.append((_lines(s, [np.vstack([outer, outer[:1]]) * 0.99], view, 0.07), c2))
        return out
    if cls in ("stripes", "checker"):
        mask = _poly(s, [_outline(p["outline"], p["corner"])], view)
        u, v = view.grid()
        ca, sa = math.cos(p["angle"]), math.sin(p["angle"])
        a, b = ca * u + sa * v, -sa * u + ca * v
        period = 2.0 / p["bands"]
        if cls == "stripes":
            val = np.sin(math.pi * 2 * a / period) * period / (2 * math.pi)
        else:  # product of two square waves: the sign flips on every cell edge
            val = np.sin(math.pi * 2 * a / period) * np.sin(math.pi * 2 * b / period) * period / (2 * math.pi)
        w = _soft(val, view.radius)[..., None]
        return [(mask, c1 * w + c2 * (1 - w))]
    if cls == "leaf":
        x = np.linspace(-1, 1, 48)
        half = p["width"] * (1 - x**2) ** p["power"] * (1 + p["skew"] * x)
        outline = np.vstack([np.stack([x, half], 1), np.stack([x[::-1], -half[::-1]], 1)])
        veins = [np.array([[-0.95, 0.0], [1.12, 0.0]])]
        for xi in np.linspace(-0.6, 0.6, p["veins"]):
            hi = p["width"] * (1 - xi**2) ** p["power"] * (1 + p["skew"] * xi) * 0.8
            for sgn in (1, -1):
                veins.append(np.array([[xi, 0.0], [xi + hi * p["slant"], sgn * hi]]))
        stem = _lines(s, [np.array([[0.95, 0.0], [1.15, 0.06]])], view, 0.07)
        return [(np.maximum(_poly(s, [outline], view), stem), c1), (_lines(s, veins, view, 0.045), c2)]
    if cls == "cross":
        h, (e, n, w_, so) = p["half"], p["arms"]
        pts = np.array([[h, h], [e, h], [e, -h], [h, -h], [h, -so], [-h, -so], [-h, -h], [-w_, -h], [-w_, h],
                        [-h, h], [-h, n], [h, n]])  # fmt: skip
        return [(_poly(s, [pts], view), c1)]
    if cls == "spiral":
        t = np.linspace(0, p["turns"] * 2 * math.pi, int(40 * p["turns"]))
        r = p["start"] + (1 - p["start"]) * t / t[-1]
        return [(_lines(s, [np.stack([r * np.cos(t), r * np.sin(t)], 1)], view, p["width"]), c1)]
    if cls == "dots":
        out = []
        for i, (x, y) in enumerate(p["pts"]):
            out.append((_poly(s, [_circle(24, p["r"], x, y)], view), c2 if p["two_tone"] and i % 2 else c1))
        return out
    if cls == "crescent":
        bite = _poly(s, [_circle(72, p["inner"], p["offset"], 0.0)], view)
        return [(_poly(s, [_circle(72)], view) * (1 - bite), c1)]
    if cls == "arrow":
        sh, hw, hl = p["shaft"], p["head_w"], p["head_l"]
        tip = 1.0 - hl
        pts = np.array([[-1, sh], [tip, sh], [tip, hw], [1, 0], [tip, -hw], [tip, -sh], [-1, -sh]])
        return [(_poly(s, [pts], view), c1)]
    raise FaceforgeError(f"unknown object class {cls!r}; expected one of {', '.join(OBJECT_CLASSES)}")


def _background(size: int, rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random textured background: a smooth colour field, two octaves of grain, a few soft blobs."""
    base = _far_colour(rng, avoid, 110)
    g = int(rng.integers(2, 6))
    field = base + rng.normal(0, 35, (g, g, 3)).astype(np.float32)
    img = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)
    for cells, amp in ((int(rng.integers(8, 16)), rng.uniform(4, 18)), (size // 3, rng.uniform(2, 10))):
        grain = cv2.resize(rng.normal(0, amp, (cells, cells)).astype(np.float32), (size, size))
        img += grain[..., None]
    for _ in range(int(rng.integers(0, 4))):  # soft blobs: clutter, too blurred to pass for an object
        blob = np.zeros((size, size), np.float32)
        centre = (int(rng.uniform(0, size)), int(rng.uniform(0, size)))
        axes = (int(rng.uniform(0.08, 0.25) * size), int(rng.uniform(0.08, 0.25) * size))
        cv2.ellipse(blob, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), size * 0.05)[..., None]
        img = img * (1 - 0.6 * blob) + _rgb(rng, 0.1) * 0.6 * blob
    return img


class SynthObjects:
    """Renders SynthObjects views: ``image(cls, obj, view)`` -> RGB uint8 ``[size, size, 3]``."""

    def __init__(self, seed: int = 0, size: int = 96) -> None:
        if int(size) < 32:
            raise FaceforgeError(f"synth objects: size {size} is too small; expected >= 32 pixels")
        self.seed, self.size = int(seed), int(size)

    def instance(self, cls: str, obj: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Proportions and the two colours of object ``obj`` of class ``cls`` (the same in every view)."""
        ci = OBJECT_CLASSES.index(cls) if cls in OBJECT_CLASSES else -1
        if ci < 0:
            raise FaceforgeError(f"unknown object class {cls!r}; expected one of {', '.join(OBJECT_CLASSES)}")
        rng = np.random.default_rng([self.seed, ci, obj, 1 << 20])
        p = _instance(cls, rng)
        c1 = _rgb(rng)
        return p, c1, _far_colour(rng, c1, 120)

    def image(self, cls: str, obj: int, view: int) -> np.ndarray:
        """View ``view`` of object ``obj`` of class ``cls``."""
        p, c1, c2 = self.instance(cls, obj)
        rng = np.random.default_rng([self.seed, OBJECT_CLASSES.index(cls), obj, view])
        s = self.size
        pose = _View(s, rng, p["extent"])
        tint = rng.uniform(0.88, 1.12, 3).astype(np.float32)  # the light's colour, object only
        img = _background(s, rng, c1)
        for mask, colour in _layers(cls, p, pose, c1 * tint, c2 * tint):
            m = mask[..., None]
            img = img * (1 - m) + np.asarray(colour, np.float32) * m
        # lighting: overall gain and a linear gradient in a random direction
        ys, xs = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
        a = rng.uniform(0, 2 * math.pi)
        light = rng.uniform(0.75, 1.2) * (1 + rng.uniform(0, 0.5) * (math.cos(a) * xs + math.sin(a) * ys))
        img = img * light[..., None]
        sigma = rng.uniform(0, 1.3)
        if sigma > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigma * s / 96)
        img = img + rng.normal(0, rng.uniform(1, 8), img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def object_name(cls: str, obj: int) -> str:
    """The ID prefix of object ``obj`` of class ``cls`` (``star007``)."""
    return f"{cls}{obj:03d}"


def write_objects(
    out: str | os.PathLike[str],
    classes: int = 8,
    ids_per_class: int = 24,
    views: int = 5,
    size: int = 96,
    seed: int = 0,
    progress: bool | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Render SynthObjects into ``out`` as ``<class>/<class><ID>_<view>.jpg`` and return its summary.

    ``classes``: the first that many of :data:`OBJECT_CLASSES`. Re-running with the same arguments
    into a complete folder does nothing; a non-empty ``out`` written otherwise is refused unless
    ``overwrite`` (then only a folder this command wrote is replaced), exactly as for SynthFaces.
    """
    out = Path(out)
    params = {
        "kind": "objects",
        "classes": int(classes),
        "ids_per_class": int(ids_per_class),
        "views": int(views),
        "size": int(size),
        "seed": int(seed),
        # 2: objects span 60 to 84 % of the image (1: 50 to 74 %). A folder of another format is
        # refused like other parameters, so one seed keeps meaning one set of images.
        "format": 2,
    }
    meta = out / MANIFEST
    old = _read_json(meta)
    if old.get("params") == params and not overwrite:
        return old
    if not 1 <= classes <= len(OBJECT_CLASSES):
        raise FaceforgeError(
            f"synth objects: classes={classes} (--classes) must be between 1 and {len(OBJECT_CLASSES)}"
        )
    if ids_per_class < 1 or views < 1:
        raise FaceforgeError(
            f"synth objects: need ids_per_class >= 1 and views >= 1, got {ids_per_class} and {views}"
        )
    if seed < 0:
        raise FaceforgeError(f"synth objects: seed={seed} must be >= 0")
    synth = SynthObjects(seed, size)  # checks size before anything is written
    names = list(OBJECT_CLASSES[:classes])
    _claim(out, params, old, overwrite, written=(*OBJECT_CLASSES, MANIFEST), what="SynthObjects")
    bar = progress_bar(classes * ids_per_class, "SynthObjects objects", unit="object", enabled=progress)
    n = 0
    for cls in names:
        (out / cls).mkdir(parents=True, exist_ok=True)
        for obj in range(ids_per_class):
            for v in range(views):
                rgb = synth.image(cls, obj, v)
                q = int(np.random.default_rng([seed, OBJECT_CLASSES.index(cls), obj, v, 31]).integers(60, 96))
                ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
                if not ok:
                    raise RuntimeError(f"JPEG encoding failed for {cls} object {obj} view {v}")
                write_bytes(out / cls / f"{object_name(cls, obj)}_{v + 1}.jpg", buf.tobytes())
                n += 1
            bar.update(1)
    bar.close()
    summary = {
        "kind": "objects",
        "params": params,
        "layout": "class",
        "classes": names,
        "objects": classes * ids_per_class,
        "images": n,
        "files": "<class>/<class><ID>_<view>.jpg",
    }
    atomic_write_bytes(meta, json.dumps(summary, indent=2).encode("utf-8"))
    (out / _PARTIAL).unlink(missing_ok=True)
    return summary
