"""SynthFaces (v1): a procedural face renderer with exact 5-point landmarks, written for faceforge (no
external assets). A seeded identity (:func:`sample_identity`) and a per-image variation
(:func:`sample_variation`) are drawn as 3-D polygons on an ellipsoidal head, projected, and mapped to
pixels by the similarity onto the ArcFace 112×112 template (Deng et al., CVPR 2019; ``mode="aligned"``)
or into a 250×250 scene (``mode="wild"``). Entry points: :class:`SynthFaces`, :func:`render`,
:func:`umeyama_similarity`. Details: docs/synthfaces.md, "Model", "Geometry" and "v1 renderer".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

_SHIFT = 4
_ONE = 1 << _SHIFT

# Part ids of the landmark features in the part map (see ``render(..., part_map=True)``).
PART_LEFT_PUPIL, PART_RIGHT_PUPIL, PART_NOSE_TIP, PART_MOUTH_LEFT, PART_MOUTH_RIGHT = 1, 2, 3, 4, 5

SKIN_TONES = np.array(
    [
        [255, 224, 196],
        [241, 194, 160],
        [224, 172, 130],
        [198, 140, 100],
        [161, 110, 75],
        [120, 80, 55],
        [90, 60, 42],
    ],
    dtype=np.float64,
)
HAIR_COLOURS = np.array(
    [
        [20, 15, 12],
        [60, 40, 25],
        [110, 75, 40],
        [170, 125, 70],
        [220, 190, 130],
        [140, 50, 25],
        [150, 150, 150],
    ],
    dtype=np.float64,
)
IRIS_COLOURS = np.array(
    [[70, 45, 25], [110, 75, 40], [60, 100, 150], [80, 120, 80], [40, 30, 25]], dtype=np.float64
)


@dataclass
class Identity:
    """Seeded appearance parameters of one synthetic person (all lengths in face units)."""

    face_a: float  # half width
    face_b: float  # half height
    jaw: float  # how much the lower face narrows (0 round … 0.45 pointed)
    skin: np.ndarray
    eye_y: float
    eye_dx: float  # half inter-ocular distance
    eye_w: float
    eye_h: float
    eye_tilt: float
    iris: np.ndarray
    iris_r: float
    brow_dy: float
    brow_thick: float
    brow_len: float
    brow_tilt: float
    brow_arch: float
    nose_y: float
    nose_w: float
    nose_protrude: float
    mouth_y: float
    mouth_hw: float
    lip_thick: float
    lip_colour: np.ndarray
    hair_style: int  # 0 bald, 1 short, 2 fringe, 3 long, 4 side part
    hair: np.ndarray
    hair_line: float
    ear_size: float
    beard: int  # 0 none, 1 moustache, 2 goatee, 3 full
    glasses: int  # 0 none, 1 round, 2 rectangular
    glasses_colour: np.ndarray
    marks: np.ndarray  # [n, 3]: x, y, radius of moles
    cheek: float  # blush strength


@dataclass
class Variation:
    """Per-image nuisance parameters."""

    yaw: float
    pitch: float
    roll: float
    smile: float
    mouth_open: float
    brow_raise: float
    blink: float
    jitter: np.ndarray  # (dscale, drot, dx, dy) of the alignment / placement
    light_dir: float
    light_strength: float
    gain: np.ndarray  # per-channel colour cast
    brightness: float
    contrast: float
    blur: float
    noise: float
    gray: bool
    occlusion: int  # 0 none, 1 blob, 2 mask, 3 bar
    occ_params: np.ndarray
    bg_seed: int
    hair_jitter: float


def _pick(rng: np.random.Generator, table: np.ndarray, jitter: float) -> np.ndarray:
    base = table[rng.integers(len(table))]
    return np.clip(base + rng.normal(0, jitter, 3), 0, 255)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw an identity; every draw is independent so identities differ in many ways at once."""
    eye_y = rng.uniform(-0.26, -0.12)
    nose_y = eye_y + rng.uniform(0.34, 0.48)
    n_marks = rng.integers(0, 6)
    marks = np.stack(
        [
            rng.uniform(-0.55, 0.55, n_marks),
            rng.uniform(-0.4, 0.75, n_marks),
            rng.uniform(0.04, 0.07, n_marks),
        ],
        axis=1,
    )
    skin = _pick(rng, SKIN_TONES, 12.0)
    return Identity(
        face_a=rng.uniform(0.70, 1.0),
        face_b=rng.uniform(0.95, 1.12),
        jaw=rng.uniform(0.0, 0.45),
        skin=skin,
        eye_y=eye_y,
        eye_dx=rng.uniform(0.27, 0.42),
        eye_w=rng.uniform(0.10, 0.17),
        eye_h=rng.uniform(0.045, 0.085),
        eye_tilt=rng.uniform(-0.18, 0.18),
        iris=_pick(rng, IRIS_COLOURS, 15.0),
        iris_r=rng.uniform(0.045, 0.06),
        brow_dy=rng.uniform(0.09, 0.17),
        brow_thick=rng.uniform(0.015, 0.07),
        brow_len=rng.uniform(0.14, 0.24),
        brow_tilt=rng.uniform(-0.25, 0.25),
        brow_arch=rng.uniform(-0.02, 0.06),
        nose_y=nose_y,
        nose_w=rng.uniform(0.06, 0.18),
        nose_protrude=rng.uniform(0.2, 0.4),
        mouth_y=nose_y + rng.uniform(0.25, 0.38),
        mouth_hw=rng.uniform(0.19, 0.35),
        lip_thick=rng.uniform(0.025, 0.085),
        lip_colour=np.clip(skin * rng.uniform(0.55, 0.8) + np.array([rng.uniform(10, 50), 0, 0]), 0, 255),
        hair_style=int(rng.integers(0, 5)),
        hair=_pick(rng, HAIR_COLOURS, 10.0),
        hair_line=rng.uniform(-0.85, -0.55),
        ear_size=rng.uniform(0.12, 0.26),
        beard=int(rng.choice(4, p=[0.6, 0.15, 0.1, 0.15])),
        glasses=int(rng.choice(3, p=[0.7, 0.15, 0.15])),
        glasses_colour=rng.uniform(0, 120, 3),
        marks=marks,
        cheek=rng.uniform(0.0, 0.25),
    )


def sample_variation(rng: np.random.Generator, mode: str = "aligned", difficulty: float = 1.0) -> Variation:
    """Draw the nuisances of one image; ``difficulty`` scales pose, jitter and degradations."""
    d = difficulty
    occ = int(rng.choice(4, p=[0.93, 0.04, 0.015, 0.015])) if d > 0 else 0
    return Variation(
        yaw=math.radians(rng.uniform(-25, 25) * d),
        pitch=math.radians(rng.uniform(-14, 14) * d),
        roll=math.radians(rng.uniform(-15, 15) * d) if mode == "wild" else math.radians(rng.normal(0, 3) * d),
        smile=rng.uniform(-0.3, 1.0) * d,
        mouth_open=max(0.0, rng.uniform(-0.6, 1.0)) * d,
        brow_raise=rng.uniform(-0.5, 1.0) * d,
        blink=max(0.0, rng.uniform(-1.5, 0.9)) * d,
        jitter=rng.normal(0, 1, 4) * np.array([0.045, 0.045, 0.025, 0.025]) * d,
        light_dir=rng.uniform(0, 2 * math.pi),
        light_strength=rng.uniform(0.0, 0.5) * d,
        gain=np.exp(rng.normal(0, 0.09 * d, 3)),
        brightness=rng.normal(0, 22 * d),
        contrast=math.exp(rng.normal(0, 0.2 * d)),
        blur=max(0.0, rng.uniform(-0.6, 1.4)) * d,
        noise=rng.uniform(0, 7) * d,
        gray=bool(rng.random() < 0.05 * d),
        occlusion=occ,
        occ_params=rng.random(8),
        bg_seed=int(rng.integers(1 << 31)),
        hair_jitter=rng.normal(0, 0.03 * d),
    )


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares non-reflective similarity mapping ``src`` → ``dst`` (2-D points); 2×3 matrix.

    Umeyama (TPAMI 1991) restricted to 2-D rotations has the closed form below: with centred points,
    ``a = Σ s·d / Σ|s|²`` and ``b = Σ s×d / Σ|s|²`` give ``[[a, -b], [b, a]]`` — no SVD needed.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    norm = (s0 * s0).sum()
    a = (s0 * d0).sum() / norm
    b = (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum() / norm
    r = np.array([[a, -b], [b, a]])
    return np.concatenate([r, (md - r @ ms)[:, None]], axis=1)


class _Canvas:
    """Collects polygons in face space (2-D points + a depth rule) and their draw order."""

    def __init__(self) -> None:
        self.xy: list[np.ndarray] = []
        self.z: list[np.ndarray] = []
        self.surf: list[np.ndarray] = []
        self.items: list[tuple[int, int, tuple[float, ...], int, int]] = []  # start, end, colour, part, line
        self.n = 0

    def poly(
        self,
        xy: np.ndarray,
        colour: np.ndarray | tuple,
        part: int = 0,
        line: int = 0,
        lift: float | None = None,
        z: float | np.ndarray | None = None,
    ) -> None:
        """Add a polygon: on the head surface raised by ``lift``, or at the fixed depth ``z``."""
        xy = np.asarray(xy, np.float64)
        k = len(xy)
        self.xy.append(xy)
        on_surface = z is None
        depth = (lift or 0.0) if on_surface else z
        self.z.append(np.broadcast_to(np.asarray(depth, np.float64), (k,)).copy())
        self.surf.append(np.full(k, on_surface))
        self.items.append((self.n, self.n + k, tuple(float(c) for c in colour), part, line))
        self.n += k


def _surface_z(ident: Identity, x: np.ndarray, y: np.ndarray, depth: float = 0.75) -> np.ndarray:
    q = 1.0 - (x / (ident.face_a * 1.05)) ** 2 - (y / (ident.face_b * 1.1)) ** 2
    return depth * np.sqrt(np.clip(q, 0.0, None))


_TRIG: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 20) -> np.ndarray:
    if n not in _TRIG:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        _TRIG[n] = (np.cos(t), np.sin(t))
    c, s = _TRIG[n]
    x, y = rx * c, ry * s
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


# Expression coefficients, in this order; the face geometry is linear in each of them.
EXPRESSIONS = ("blink", "brow_raise", "smile", "mouth_open", "hair_jitter")
_PUPIL_LIFT, _DOT_LIFT = 0.01, 0.022


def _build_face(ident: Identity, expr: np.ndarray, cv: _Canvas) -> None:
    """Add every face polygon (back to front) to ``cv``, then the 5 landmarks as a hidden item.

    ``expr`` holds the :data:`EXPRESSIONS` coefficients. Every point is an affine function of them
    (no branch depends on them), which lets :class:`_Geometry` precompute an identity once.
    """
    blink, brow_raise, smile, mouth_open, hj = (float(v) for v in expr)
    a, b = ident.face_a, ident.face_b
    skin, hair = ident.skin, ident.hair
    shade = skin * 0.82
    if ident.hair_style == 3:  # long hair behind the head
        t = np.linspace(math.pi * 0.95, math.pi * 2.05, 24)
        back = np.stack([1.18 * a * np.cos(t), 1.05 * b * np.sin(t) * 0.95], 1)
        back = np.concatenate([back, [[1.2 * a, 0.75 * b + hj], [-1.2 * a, 0.75 * b - hj]]])
        cv.poly(back, hair * 0.85, z=-0.3)
    neck = np.array([[-0.42 * a, 0.5 * b], [0.42 * a, 0.5 * b], [0.5 * a, 1.6 * b], [-0.5 * a, 1.6 * b]])
    cv.poly(neck, shade, z=-0.4)
    ey = (ident.eye_y + ident.nose_y) / 2
    for sgn in (-1, 1):
        cv.poly(
            _ellipse(sgn * a * 0.98, ey, ident.ear_size * 0.55, ident.ear_size, n=14), skin * 0.9, z=-0.15
        )
    # Face outline: an ellipse whose lower half narrows by the jaw parameter.
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    y = b * np.sin(t)
    x = a * np.cos(t) * (1 - ident.jaw * np.clip(y / b, 0, 1) ** 2)
    cv.poly(np.stack([x, y], 1), skin, z=0.0)
    if ident.cheek > 0.05:
        blush = skin * (1 - ident.cheek) + np.array([230, 90, 90]) * ident.cheek
        for sgn in (-1, 1):
            cv.poly(_ellipse(sgn * (ident.eye_dx + 0.08), ident.nose_y, 0.13, 0.08, n=12), blush)
    for mx, my, mr in ident.marks:
        cv.poly(_ellipse(mx, my, mr, mr, n=8), skin * 0.45, lift=0.01)
    hl = ident.hair_line + hj
    if ident.hair_style in (1, 2, 3, 4):
        t = np.linspace(math.pi * 1.0, math.pi * 2.0, 22)
        cap = np.stack([1.04 * a * np.cos(t), 1.08 * b * np.sin(t) - 0.04], 1)
        if ident.hair_style == 2:  # fringe
            front = [[0.8 * a, hl + 0.18], [0.3 * a, hl + 0.28], [-0.3 * a, hl + 0.25], [-0.8 * a, hl + 0.15]]
        elif ident.hair_style == 4:  # side part
            front = [[0.9 * a, hl + 0.1], [0.2 * a, hl - 0.05], [-0.5 * a, hl + 0.12], [-0.95 * a, hl + 0.3]]
        else:
            front = [[0.85 * a, hl + 0.05], [0.0, hl - 0.02], [-0.85 * a, hl + 0.05]]
        side = [[-1.04 * a, hl + 0.3]] if ident.hair_style == 3 else []
        cv.poly(np.concatenate([cap, np.array(front + side)]), hair, lift=0.02)
    if ident.beard in (2, 3):  # before the mouth so the lips sit on top
        t = np.linspace(0.05 * math.pi, 0.95 * math.pi, 18)
        if ident.beard == 3:
            lower = np.stack(
                [a * 0.97 * np.cos(t) * (1 - ident.jaw * np.sin(t) ** 2), b * np.sin(t) + 0.02], 1
            )
            upper = np.array([[a * 0.95, ident.nose_y], [-a * 0.95, ident.nose_y]])
        else:
            lower = np.stack([0.32 * np.cos(t), b * np.sin(t) + 0.02], 1)
            upper = np.array([[0.3, ident.mouth_y], [-0.3, ident.mouth_y]])
        cv.poly(np.concatenate([lower, upper[::-1]]), hair * 0.9, lift=0.01)
    # Eyes: sclera, iris, pupil (the landmark), upper lid, brow.
    openness = 1 - 0.8 * blink
    open_h = ident.eye_h * openness
    for idx, sgn in enumerate((-1, 1)):
        ex, ey_ = sgn * ident.eye_dx, ident.eye_y
        tilt = -sgn * ident.eye_tilt
        cv.poly(_ellipse(ex, ey_, ident.eye_w, open_h, tilt, 18), (245, 242, 235))
        ir = min(ident.iris_r, ident.eye_h * 1.1)
        cv.poly(_ellipse(ex, ey_, ir, ir * openness, 0, 14), ident.iris, lift=0.005)
        pr = ir * 0.45
        cv.poly(_ellipse(ex, ey_, pr, pr * openness, 0, 12), (12, 10, 10), part=1 + idx, lift=_PUPIL_LIFT)
        lid = _ellipse(ex, ey_, ident.eye_w * 1.05, open_h, tilt, 18)[9:18]  # the upper half
        cv.poly(lid, skin * 0.35, line=max(1, int(ident.brow_thick * 40)), lift=0.012)
        bt = np.linspace(-1, 1, 8)
        bx = ex + sgn * bt * ident.brow_len
        by = (
            ey_
            - ident.brow_dy
            - 0.04 * brow_raise
            - ident.brow_arch * (1 - bt**2)
            + sgn * bt * ident.brow_tilt * 0.1
        )
        band = np.concatenate(
            [np.stack([bx, by - ident.brow_thick / 2], 1), np.stack([bx, by + ident.brow_thick / 2], 1)[::-1]]
        )
        cv.poly(band, hair * 0.8, lift=0.015)
    # Nose: bridge shade, nostrils, tip highlight (the landmark).
    nz = float(_surface_z(ident, np.array([0.0]), np.array([ident.nose_y]))[0]) + ident.nose_protrude
    bridge_y = np.array([ident.eye_y + 0.05, ident.nose_y])
    bridge_z = _surface_z(ident, np.zeros(2), bridge_y) + np.array([0.1, ident.nose_protrude * 0.9])
    cv.poly(np.stack([np.zeros(2), bridge_y], 1), shade, line=1, z=bridge_z)
    for sgn in (-1, 1):
        cv.poly(
            _ellipse(sgn * ident.nose_w * 0.55, ident.nose_y + 0.04, 0.035, 0.02, n=8),
            skin * 0.45,
            z=nz - 0.15,
        )
    tip_colour = np.clip(skin * 1.08 + 8, 0, 255)
    cv.poly(_ellipse(0.0, ident.nose_y, 0.03, 0.03, n=10), tip_colour, part=PART_NOSE_TIP, z=nz)
    # Mouth: lips bent by the smile, an opening, corner dots (the landmarks).
    hw = ident.mouth_hw * (1 + 0.12 * smile)
    ly = ident.mouth_y - 0.06 * smile
    xs = np.linspace(-hw, hw, 11)
    u = np.linspace(-1, 1, 11)
    mid = ly + 0.06 * smile * (1 - u**2)  # the centre of the lip line sags as the corners rise
    opening = 0.08 * mouth_open
    if ident.beard == 1:
        top = np.stack([xs * 1.15, mid - ident.lip_thick - 0.02 - 0.06 * (1 - u**2)], 1)
        bottom = np.stack([xs * 1.15, mid - ident.lip_thick - 0.02], 1)[::-1]
        cv.poly(np.concatenate([top, bottom]), hair * 0.9, lift=0.03)
    upper = np.stack([xs, mid - ident.lip_thick * 0.8 * (1 - u**4)], 1)
    lower = np.stack([xs, mid + opening + ident.lip_thick * (1 - u**4)], 1)[::-1]
    cv.poly(np.concatenate([upper, lower]), ident.lip_colour, lift=0.02)
    inner = np.concatenate([np.stack([xs, mid], 1), np.stack([xs, mid + opening * (1 - u**2)], 1)[::-1]])
    cv.poly(inner, (40, 20, 20), lift=0.021)
    for idx, cx in enumerate((-hw, hw)):
        cv.poly(
            _ellipse(cx, ly, 0.018, 0.018, n=8),
            ident.lip_colour * 0.5,
            part=PART_MOUTH_LEFT + idx,
            lift=_DOT_LIFT,
        )
    if ident.glasses:
        w, h = max(ident.eye_w * 1.6, 0.2), 0.13
        for sgn in (-1, 1):
            ex = sgn * ident.eye_dx
            if ident.glasses == 1:
                frame = _ellipse(ex, ident.eye_y, w, h, 0, 20)
            else:
                frame = np.array(
                    [
                        [ex - w, ident.eye_y - h],
                        [ex + w, ident.eye_y - h],
                        [ex + w, ident.eye_y + h],
                        [ex - w, ident.eye_y + h],
                        [ex - w, ident.eye_y - h],
                    ]
                )
            cv.poly(frame, ident.glasses_colour, line=2, lift=0.12)
        bridge = np.array([[-ident.eye_dx + w, ident.eye_y - 0.02], [ident.eye_dx - w, ident.eye_y - 0.02]])
        cv.poly(bridge, ident.glasses_colour, line=2, lift=0.14)
    # The 5 landmarks (hidden item, part -1): pupils, nose tip, mouth corners at their features' depth.
    lm = np.array(
        [[-ident.eye_dx, ident.eye_y], [ident.eye_dx, ident.eye_y], [0.0, ident.nose_y], [-hw, ly], [hw, ly]]
    )
    cv.poly(lm, (0, 0, 0), part=-1, z=np.array([np.nan, np.nan, nz, np.nan, np.nan]))


class _Geometry:
    """An identity's face as ``base + expr @ basis`` (face-space points), with the depth rule."""

    def __init__(self, ident: Identity) -> None:
        self.ident = ident
        ref = _Canvas()
        _build_face(ident, np.zeros(len(EXPRESSIONS)), ref)
        self.base = np.concatenate(ref.xy)
        basis = []
        for k in range(len(EXPRESSIONS)):
            cv = _Canvas()
            _build_face(ident, np.eye(len(EXPRESSIONS))[k], cv)
            basis.append(np.concatenate(cv.xy) - self.base)
        self.basis = np.stack(basis)
        z = np.concatenate(ref.z)
        surf = np.concatenate(ref.surf)
        # Landmark rows with NaN depth follow the surface with the lift of the feature they mark.
        lm = slice(ref.n - 5, ref.n)
        lifts = np.array([_PUPIL_LIFT, _PUPIL_LIFT, 0.0, _DOT_LIFT, _DOT_LIFT])
        nan = np.isnan(z[lm])
        z[lm] = np.where(nan, lifts, z[lm])
        surf[lm] = nan
        self.z, self.surf, self.items = z, surf, ref.items[:-1]

    def points3d(self, expr: np.ndarray) -> np.ndarray:
        """All points (polygons, then the 5 landmarks) in face space for expression ``expr``."""
        xy = self.base + np.tensordot(expr, self.basis, axes=1)
        zs = _surface_z(self.ident, xy[:, 0], xy[:, 1])
        z = np.where(self.surf, zs + self.z, self.z)
        return np.concatenate([xy, z[:, None]], axis=1)


def _background(rng: np.random.Generator, size: tuple[int, int], clutter: int) -> np.ndarray:
    h, w = size
    ends = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    # A two-pixel image stretched by bilinear resize is the cheapest colour gradient.
    g = ends[None] if rng.random() < 0.5 else ends[:, None]
    img = cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    for _ in range(clutter):
        col = tuple(float(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        p = (rng.uniform(-0.1, 1.1, 4) * np.array([w, h, w, h])).astype(int)
        if kind == 0:
            cv2.rectangle(img, (p[0], p[1]), (p[2], p[3]), col, -1)
        elif kind == 1:
            cv2.circle(img, (p[0], p[1]), int(rng.uniform(0.05, 0.3) * w), col, -1)
        else:
            cv2.line(img, (p[0], p[1]), (p[2], p[3]), col, int(rng.integers(1, 6)))
    return img


def _project(pts3: np.ndarray, var: Variation, cam: float = 6.0) -> np.ndarray:
    r = _rotation(var.yaw, var.pitch, var.roll)
    q = pts3 @ r.T
    f = cam / (cam - q[:, 2:3])  # perspective: nearer points spread out
    return q[:, :2] * f


def _expr(var: Variation) -> np.ndarray:
    return np.array([var.blink, var.brow_raise, var.smile, var.mouth_open, var.hair_jitter])


def render(
    ident: Identity | _Geometry,
    var: Variation,
    mode: str = "aligned",
    size: int | None = None,
    part_map: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one RGB uint8 image and its 5 landmarks ([5,2] float32, pixels).

    ``part_map=True`` returns instead a uint8 label image of the landmark features alone (pupils,
    nose-tip highlight, mouth-corner dots, each whole and labelled with its part id 1..5, the rest
    0), drawn by the very same projection and draw calls as the image.
    """
    if mode not in ("aligned", "wild"):
        raise ValueError(f"mode must be 'aligned' or 'wild', got {mode!r}")
    geo = ident if isinstance(ident, _Geometry) else _Geometry(ident)
    size = size or (112 if mode == "aligned" else 250)
    rng = rng or np.random.default_rng(var.bg_seed)
    allp = _project(geo.points3d(_expr(var)), var)
    lm2 = allp[-5:]
    js, jr, jx, jy = var.jitter
    if mode == "aligned":
        dst = ARCFACE_112 * (size / 112.0)
        m = umeyama_similarity(lm2, dst)
        # Detector noise: a small similarity perturbation about the template centre.
        c = dst.mean(0)
        rot = np.array([[math.cos(jr), -math.sin(jr)], [math.sin(jr), math.cos(jr)]]) * (1 + js)
        m = np.concatenate(
            [rot @ m[:, :2], (rot @ (m[:, 2] - c) + c + np.array([jx, jy]) * size)[:, None]], 1
        )
    else:
        eye_px = rng.uniform(0.08, 0.24) * size * (1 + js)
        scale = eye_px / (2 * geo.ident.eye_dx)
        centre = rng.uniform(0.3, 0.7, 2) * size
        m = np.array([[scale, 0, centre[0]], [0, scale, centre[1]]])
    px = allp @ m[:, :2].T + m[:, 2]
    lms = px[-5:].astype(np.float32)
    ipts = np.round(px[:-5] * _ONE).astype(np.int32)

    if part_map:
        img = np.zeros((size, size), np.uint8)
        for s, e, _col, part, line in geo.items:
            if part <= 0:  # only the landmark features, unoccluded, so each is seen whole
                continue
            colour = (float(part),)
            if line:
                cv2.polylines(img, [ipts[s:e]], False, colour, line, cv2.LINE_8, _SHIFT)
            else:
                cv2.fillPoly(img, [ipts[s:e]], colour, cv2.LINE_8, _SHIFT)
        return img, lms

    img = _background(
        np.random.default_rng(var.bg_seed), (size, size), clutter=4 if mode == "aligned" else 12
    )
    for s, e, col, _part, line in geo.items:
        if line:
            cv2.polylines(img, [ipts[s:e]], False, col, line, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillPoly(img, [ipts[s:e]], col, cv2.LINE_AA, _SHIFT)
    _occlude(img, var, lms)
    return _photometric(img, var, size), lms


def _occlude(img: np.ndarray, var: Variation, lms: np.ndarray) -> None:
    if var.occlusion == 0:
        return
    p = var.occ_params
    eye_d = float(np.linalg.norm(lms[1] - lms[0]))
    col = tuple(float(v) for v in p[4:7] * 255)
    if var.occlusion == 1:  # a blob (hand, object) somewhere over the face
        c = lms[int(p[0] * 5) % 5] + (p[1:3] - 0.5) * eye_d
        axes = (int(eye_d * (0.3 + 0.4 * p[3])), int(eye_d * 0.5))
        cv2.ellipse(img, (int(c[0]), int(c[1])), axes, p[7] * 180, 0, 360, col, -1, cv2.LINE_AA)
    elif var.occlusion == 2:  # a mask over nose and mouth
        top, bot = lms[2, 1] - 0.15 * eye_d, lms[3, 1] + 0.8 * eye_d
        x0, x1 = lms[3, 0] - 0.7 * eye_d, lms[4, 0] + 0.7 * eye_d
        pts = np.array([[x0, top], [x1, top], [x1 - 0.2 * eye_d, bot], [x0 + 0.2 * eye_d, bot]])
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], col, cv2.LINE_AA)
    else:  # a horizontal bar (hat brim, hair strand, scarf)
        y = int(lms[0, 1] + (p[0] - 0.7) * eye_d * 1.5)
        cv2.rectangle(img, (0, y), (img.shape[1], y + int(eye_d * (0.15 + 0.25 * p[1]))), col, -1)


_NOISE_TILE = np.random.default_rng(12345).standard_normal((384, 384, 3)).astype(np.float32)


def _photometric(img: np.ndarray, var: Variation, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if var.blur > 0.15:
        img = cv2.GaussianBlur(img, (0, 0), var.blur * size / 112.0)
    # ((img - 128) * contrast + 128 + brightness) * gain, as one multiply-add along the channel axis.
    g = var.gain.astype(np.float32)
    f = img.astype(np.float32)
    f *= g * np.float32(var.contrast)
    f += g * np.float32(128.0 * (1 - var.contrast) + var.brightness)
    if var.light_strength > 0:
        dx, dy = math.cos(var.light_dir), math.sin(var.light_dir)
        k = var.light_strength / (0.5 * max(h, w))
        ramp = (np.arange(w, dtype=np.float32)[None, :] - w / 2) * (k * dx) + (
            np.arange(h, dtype=np.float32)[:, None] - h / 2
        ) * (k * dy)
        f = cv2.multiply(f, cv2.cvtColor(1.0 + ramp, cv2.COLOR_GRAY2RGB))
    if var.gray:
        f = cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if var.noise > 0.5:
        n = _NOISE_TILE.shape[0]
        if h <= n and w <= n:
            oy, ox = (var.bg_seed >> 8) % (n - h + 1), var.bg_seed % (n - w + 1)
            tile = _NOISE_TILE[oy : oy + h, ox : ox + w]
        else:
            tile = np.random.default_rng(var.bg_seed).standard_normal((h, w, 3)).astype(np.float32)
        f = cv2.scaleAdd(np.ascontiguousarray(tile), float(var.noise), f)
    np.clip(f, 0, 255, out=f)
    return f.astype(np.uint8)


class SynthFaces:
    """Deterministic SynthFaces: ``image(identity, index)`` is a pure function of (seed, identity, index).

    Args:
        seed: data-set seed; identities of different seeds are unrelated.
        mode: ``"aligned"`` (112×112 ArcFace-aligned crops) or ``"wild"`` (250×250 scenes; v1 only).
        size: output side in pixels (default 112 aligned, 250 wild); the template scales with it.
        difficulty: scales every nuisance (0 renders the identity's canonical frontal face).
        version: 1 (flat 2-D cartoon faces, the original set; its images never change) or 2 (3-D
            heads with texture, lighting and perspective: :mod:`faceforge.data.synth.render_v2`).
        appearance_share: version 2: consecutive groups of this many identities share skin, hair,
            eyes, beard and accessories and differ only in head geometry (1: every identity its own).
        landmark_jitter: version 2: σ of the noise on the points each crop is aligned by, in
            inter-ocular distances (``None``: ``render_v2.LANDMARK_JITTER``, exact points).
    """

    def __init__(
        self,
        seed: int = 0,
        mode: str = "aligned",
        size: int | None = None,
        difficulty: float = 1.0,
        version: int = 1,
        appearance_share: int = 1,
        landmark_jitter: float | None = None,
    ) -> None:
        if mode not in ("aligned", "wild"):
            raise ValueError(f"SynthFaces mode must be 'aligned' or 'wild', got {mode!r}")
        if version not in (1, 2):
            raise ValueError(f"SynthFaces version must be 1 or 2, got {version!r}")
        if version == 2 and mode != "aligned":
            raise ValueError("SynthFaces version 2 renders aligned crops only (mode='aligned')")
        self.seed, self.mode, self.size, self.difficulty = seed, mode, size, difficulty
        self.version = version
        self._geo: dict[int, _Geometry] = {}
        self._v2: Any = None
        if version == 2:
            from faceforge.data.synth.render_v2 import SynthFacesV2

            self._v2 = SynthFacesV2(
                seed=seed,
                size=size,
                difficulty=difficulty,
                appearance_share=appearance_share,
                landmark_jitter=landmark_jitter,
            )
        elif appearance_share != 1 or landmark_jitter is not None:
            raise ValueError("SynthFaces appearance_share and landmark_jitter need version 2")

    def identity(self, ident: int) -> Any:
        """The parameters of identity ``ident`` (:class:`Identity`, or ``Identity2`` for version 2)."""
        if self._v2 is not None:
            return self._v2.identity(ident)
        return self.geometry(ident).ident

    def geometry(self, ident: int) -> _Geometry:
        """The precomputed face geometry of identity ``ident`` (cached; version 1)."""
        if ident not in self._geo:
            self._geo[ident] = _Geometry(sample_identity(np.random.default_rng([self.seed, ident, 7919])))
        return self._geo[ident]

    def variation(self, ident: int, index: int) -> Any:
        """The nuisance draw of image ``index`` of identity ``ident``."""
        if self._v2 is not None:
            return self._v2.variation(ident, index)
        return sample_variation(
            np.random.default_rng([self.seed, ident, index, 104729]), self.mode, self.difficulty
        )

    def image(
        self, ident: int, index: int, part_map: bool = False, **overrides: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render image ``index`` of identity ``ident``: (RGB uint8 [H,W,3] or part map, landmarks [5,2]).

        ``overrides`` change one attribute and keep every other draw of this image: a field of the
        identity (e.g. ``skin``, ``glasses``, ``hair_style``) or of the variation (e.g. ``smile``,
        ``light_dir``), ``yaw``/``pitch``/``roll`` in degrees or ``pose=(yaw, pitch)``. Version 2
        also takes ``lighting=INDEX`` (the lights of another image) and the expression names of
        ``render_v2.EXPRESSIONS2``; see :meth:`SynthFacesV2.image`.
        """
        if self._v2 is not None:
            return self._v2.image(ident, index, part_map=part_map, **overrides)
        var = self.variation(ident, index)
        rng = np.random.default_rng([self.seed, ident, index, 15485863])
        geo = self.geometry(ident)
        if overrides:
            geo, var = _override_v1(geo, var, overrides)
        return render(geo, var, self.mode, self.size, part_map=part_map, rng=rng)


def _override_v1(geo: _Geometry, var: Variation, overrides: dict[str, Any]) -> tuple[_Geometry, Variation]:
    """Apply :meth:`SynthFaces.image` overrides to a version-1 identity and variation."""
    from dataclasses import fields, replace

    over = dict(overrides)
    if "pose" in over:
        over["yaw"], over["pitch"] = over.pop("pose")
    for k in ("yaw", "pitch", "roll"):
        if k in over:
            over[k] = math.radians(float(over[k]))
    id_names = {f.name for f in fields(Identity)}
    var_names = {f.name for f in fields(Variation)}
    if "glasses" in over and isinstance(over["glasses"], bool):
        over["glasses"] = int(over["glasses"])
    if "skin" in over:
        skin = np.asarray(over.pop("skin"), np.float64)
        over["skin"] = SKIN_TONES[int(skin)] if skin.ndim == 0 else skin
    id_over = {k: v for k, v in over.items() if k in id_names}
    var_over = {k: v for k, v in over.items() if k in var_names}
    bad = sorted(set(over) - set(id_over) - set(var_over))
    if bad:
        raise ValueError(f"unknown SynthFaces override(s) {bad}: expected Identity or Variation fields")
    if id_over:
        geo = _Geometry(replace(geo.ident, **id_over))
    return geo, replace(var, **var_over)
