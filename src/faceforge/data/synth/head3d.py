"""SynthFaces v2 head model: a 3-D head mesh, its expression modes and its skin, eye and hair texture,
written from code alone (no scans, photos or learned models). :class:`Head` is a lofted surface with
identity shape modes and a hair shell, linear expression modes as in a 3DMM (Blanz and Vetter, SIGGRAPH
1999; DigiFace-1M, Bae et al., WACV 2023), a two-pigment skin texture (after Donner and Jensen, EGSR
2006) and five landmarks fixed in the texture; :func:`sample_identity2` draws an :class:`Identity2`.
Details: docs/synthfaces.md, "Head model (per identity)" and "v2 head model".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

import cv2
import numpy as np

#: texels per face unit in the texture atlas
TEX_RES = 64
#: atlas extent: arc length ``s`` in ``[-S_HALF, S_HALF]``, height ``y`` in ``[Y_TOP, Y_BOTTOM]``
S_HALF, Y_TOP, Y_BOTTOM = 3.0, -1.45, 2.05
TEX_W = int(2 * S_HALF * TEX_RES)
TEX_H = int((Y_BOTTOM - Y_TOP) * TEX_RES)
#: expression coefficients of an image, in this order (each displacement field is linear in it)
EXPRESSIONS2 = ("smile", "mouth_open", "brow_raise", "frown", "blink", "pucker")
#: columns per half ring; vertices per ring = 2 * HALF_COLS + 1
HALF_COLS = 15
#: half height, in texture units, of the mouth-interior band between the lips (physically ~0)
SEAM_UV = 0.02
_SEAM_PHYS = 0.004

# Two-pigment skin: per-channel absorption of melanin and haemoglobin (display RGB, tuned by eye so
# that melanin 0.1 ... 2.6 spans very light to very dark skin).
_BASE_REFLECTANCE = np.array([0.97, 0.90, 0.84])
_SIGMA_MELANIN = np.array([0.55, 0.72, 0.90])
_SIGMA_BLOOD = np.array([0.05, 0.35, 0.40])
HAIR_PALETTE = np.array(
    [
        [0.05, 0.04, 0.035],  # black
        [0.16, 0.10, 0.06],  # dark brown
        [0.32, 0.21, 0.12],  # brown
        [0.52, 0.38, 0.22],  # light brown
        [0.80, 0.66, 0.42],  # blond
        [0.55, 0.24, 0.10],  # red
    ]
)
IRIS_PALETTE = np.array(
    [
        [0.22, 0.12, 0.05],  # dark brown
        [0.38, 0.24, 0.10],  # brown
        [0.40, 0.38, 0.16],  # hazel
        [0.28, 0.42, 0.30],  # green
        [0.30, 0.45, 0.62],  # blue
        [0.45, 0.50, 0.55],  # grey
    ]
)
#: hair styles (fixed per identity)
HAIR_STYLES = ("bald", "buzz", "short", "medium", "long", "fringe", "afro", "receding")


def skin_albedo(melanin: float | np.ndarray, blood: float | np.ndarray) -> np.ndarray:
    """Display-RGB albedo in [0, 1] of skin with the given pigment amounts (two-pigment model)."""
    m = np.asarray(melanin, np.float64)[..., None]
    h = np.asarray(blood, np.float64)[..., None]
    return _BASE_REFLECTANCE * np.exp(-m * _SIGMA_MELANIN - h * _SIGMA_BLOOD)


@dataclass
class Identity2:
    """Parameters of one SynthFaces v2 person (lengths in face units of about 10 cm)."""

    masc: float  # 0 feminine ... 1 masculine: shifts shape, brows, hair and beard statistics
    age: float
    # skull and face profiles
    width: float
    cheek_w: float
    jaw_w: float
    chin_w: float
    chin_y: float
    face_depth: float
    back_depth: float
    q_front: float
    q_back: float
    crown: float
    forehead_slope: float
    neck_w: float
    # features (face coordinates: s across, y down; eyes near y = 0)
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    eye_tilt: float
    socket: float
    iris: np.ndarray
    iris_r: float
    brow_dy: float
    brow_thick: float
    brow_len: float
    brow_arch: float
    brow_tilt: float
    brow_density: float
    brow_ridge: float
    nose_y: float
    nose_len: float  # drawn but not used yet (kept so the random stream, and every image, stays)
    nose_protrude: float
    nose_w: float
    nose_bridge: float
    nose_tip: float
    nose_hump: float
    mouth_y: float
    mouth_hw: float
    lip_up: float
    lip_low: float
    lip_colour: np.ndarray
    cheekbone: float
    cheek_y: float
    chin_bump: float
    bumps: np.ndarray  # [k, 5]: s, y, sigma_s, sigma_y, amplitude
    ear_size: float
    # appearance
    melanin: float
    blood: float
    blotch: float
    freckles: int
    moles: np.ndarray  # [k, 3]: s, y, radius
    shine: float
    hair_style: int
    hair_colour: np.ndarray
    hair_line: float
    hair_volume: float
    part: float  # parting position in s (0: none)
    beard: int  # 0 none, 1 stubble, 2 moustache, 3 goatee, 4 full
    beard_density: float
    glasses_rate: float  # share of this person's images with glasses
    glasses_style: int  # 0 round, 1 rectangular, 2 browline
    glasses_colour: np.ndarray
    clothes: np.ndarray  # colour of the collar on the neck
    collar: float  # height where the clothes start
    tex_seed: int


def _clip(v: float, lo: float, hi: float) -> float:
    return float(min(hi, max(lo, v)))


def sample_identity2(rng: np.random.Generator, appearance: np.random.Generator | None = None) -> Identity2:
    """Draw a v2 identity: correlated like people are (masculinity and age shift many traits).

    ``appearance``: a second stream for what is not face shape (sex and age, pigments, hair, beard,
    moles, accessories, clothes); people drawn with the same appearance stream differ only in the
    geometry of the head and its features, so a model cannot tell them apart by hair or skin alone
    (DigiFace-1M reuses a few textures and hair styles across many identities). ``None``: one stream
    for everything.
    """
    ap = rng if appearance is None else appearance
    male = ap.random() < 0.5
    masc = _clip(ap.normal(0.8 if male else 0.2, 0.12), 0.0, 1.0)
    age = float(18 + 60 * ap.beta(1.6, 2.6))
    old = _clip((age - 35) / 40, 0.0, 1.0)
    n = rng.normal
    u = rng.uniform
    an, au = ap.normal, ap.uniform
    w0 = 0.74 * (1 + n(0, 0.04)) + 0.03 * masc
    # REVISION 5: temples and jaw 0.885x as wide as before, the cheeks unchanged (see eye_w below)
    width = 0.885 * w0
    # Pigments: log-uniform melanin covers very light to very dark skin; blood varies less.
    melanin = float(math.exp(au(math.log(0.12), math.log(2.6))))
    blood = au(0.25, 0.75)
    dark = _clip((melanin - 0.4) / 1.2, 0.0, 1.0)
    # Hair colour: dark skin mostly black/dark brown; light skin the whole palette; grey with age.
    probs = (
        np.array([0.30, 0.30, 0.18, 0.10, 0.08, 0.04]) * (1 - dark)
        + np.array([0.75, 0.22, 0.03, 0, 0, 0]) * dark
    )
    hair_colour = HAIR_PALETTE[ap.choice(6, p=probs / probs.sum())] * np.exp(an(0, 0.12, 3))
    grey = _clip(old * au(0.0, 1.3) - 0.2, 0.0, 1.0)
    hair_colour = hair_colour * (1 - grey) + np.array([0.62, 0.60, 0.58]) * grey * au(0.7, 1.1)
    iris_p = (
        np.array([0.35, 0.25, 0.12, 0.08, 0.12, 0.08]) * (1 - dark) + np.array([0.7, 0.3, 0, 0, 0, 0]) * dark
    )
    iris = IRIS_PALETTE[ap.choice(6, p=iris_p / iris_p.sum())] * np.exp(an(0, 0.1, 3))
    # Hair style: masculine heads short/receding/bald more often, feminine long more often.
    sp = np.array([0.05, 0.12, 0.42, 0.15, 0.04, 0.05, 0.05, 0.12]) * masc + np.array(
        [0.0, 0.02, 0.12, 0.3, 0.43, 0.08, 0.05, 0.0]
    ) * (1 - masc)
    sp[[0, 7]] *= 0.4 + 2 * old
    style = int(ap.choice(len(HAIR_STYLES), p=sp / sp.sum()))
    beard = 0
    if masc > 0.55 and ap.random() < 0.45:
        beard = int(ap.choice([1, 2, 3, 4], p=[0.4, 0.15, 0.2, 0.25]))
    eye_y = n(0, 0.025)
    nose_y = eye_y + u(0.33, 0.41)
    mouth_y = nose_y + u(0.27, 0.34)
    k = int(rng.integers(5, 10))
    bumps = np.stack(
        [u(-0.6, 0.6, k), u(-0.5, 1.0, k), u(0.1, 0.3, k), u(0.1, 0.3, k), n(0, 0.018, k)], axis=1
    )
    n_moles = int(ap.choice(5, p=[0.4, 0.3, 0.15, 0.1, 0.05]))
    moles = np.stack([au(-0.6, 0.6, n_moles), au(-0.4, 1.0, n_moles), au(0.008, 0.016, n_moles)], axis=1)
    lip_blood = blood + au(0.9, 1.6)
    lip_colour = skin_albedo(melanin * au(1.1, 1.4) + 0.1, lip_blood)
    if masc < 0.4 and ap.random() < 0.3:  # lipstick
        lip_colour = lip_colour * 0.5 + np.array([0.55, 0.12, 0.18]) * au(0.5, 1.0, 3) * 0.5
    glasses_rate = 0.75 if ap.random() < 0.12 + 0.12 * old else 0.03
    return Identity2(
        masc=masc,
        age=age,
        width=width,
        cheek_w=w0 * u(0.95, 1.04),
        jaw_w=width * (u(0.70, 0.86) + 0.06 * masc),
        chin_w=u(0.26, 0.36) + 0.05 * masc,
        chin_y=1.1 * (1 + n(0, 0.035)) + 0.03 * masc,
        face_depth=0.9 * (1 + n(0, 0.035)),
        back_depth=1.0 * (1 + n(0, 0.05)),
        q_front=u(2.6, 3.185),
        q_back=u(2.0, 2.3),
        crown=u(0.78, 0.92),
        forehead_slope=u(0.08, 0.28),
        neck_w=u(0.32, 0.38) + 0.05 * masc,
        eye_y=eye_y,
        eye_dx=u(0.29, 0.345),
        # Features since REVISION 4 (x0.7 brow height, x4 brow ridge, x1.3 nose) and REVISION 5 (eyes
        # back to x0.92 / x1.0 of REVISION 3's, brows x0.77 as thick and x1.3 as long, cheekbones x1.3,
        # a flatter face front, q_front x1.3): the proportions whose renders a SynthFaces model embeds
        # most like photos, found by benchmarks/synth_gap.py's screen (docs/synthfaces.md).
        eye_w=u(0.1108, 0.1385),
        eye_h=u(0.046, 0.064),
        eye_tilt=u(-0.08, 0.14),
        socket=u(0.05, 0.09) + 0.02 * masc,
        iris=np.clip(iris, 0, 1),
        iris_r=u(0.052, 0.062),
        brow_dy=u(0.105, 0.147),
        brow_thick=u(0.0277, 0.0461) + 0.0115 * masc,
        brow_len=u(0.169, 0.234),
        brow_arch=u(0.0, 0.04) + 0.02 * (1 - masc),
        brow_tilt=u(-0.04, 0.05),
        brow_density=au(0.75, 1.0),
        brow_ridge=u(0.04, 0.12) + 0.14 * masc,
        nose_y=nose_y,
        nose_len=u(0.85, 1.0),
        nose_protrude=u(0.221, 0.351) + 0.039 * masc,
        nose_w=u(0.143, 0.2015) + 0.026 * dark,
        nose_bridge=u(0.04, 0.065),
        nose_tip=u(0.04, 0.06),
        nose_hump=u(-0.005, 0.03) * masc,
        mouth_y=mouth_y,
        mouth_hw=u(0.2, 0.26),
        lip_up=u(0.032, 0.058) + 0.012 * dark,
        lip_low=u(0.045, 0.075) + 0.012 * dark,
        lip_colour=np.clip(lip_colour, 0, 1),
        cheekbone=u(0.0, 0.065),
        cheek_y=u(0.14, 0.28),
        chin_bump=u(0.0, 0.04),
        bumps=bumps,
        ear_size=u(0.9, 1.15),
        melanin=melanin,
        blood=blood,
        blotch=au(0.03, 0.12),
        freckles=int(ap.integers(20, 90)) if (melanin < 0.35 and ap.random() < 0.2) else 0,
        moles=moles,
        shine=au(0.08, 0.3),
        hair_style=style,
        hair_colour=np.clip(hair_colour, 0, 1),
        hair_line=au(-0.72, -0.58) + (0.12 * old * masc if style != 7 else 0.0),
        hair_volume=au(0.6, 1.3),
        part=float(ap.choice([0.0, au(-0.35, -0.15), au(0.15, 0.35)])),
        beard=beard,
        beard_density=au(0.5, 1.0),
        glasses_rate=glasses_rate,
        glasses_style=int(ap.integers(3)),
        glasses_colour=np.clip(ap.choice([0.05, 0.3, 0.6]) * np.exp(an(0, 0.3, 3)), 0, 1),
        clothes=np.clip(ap.uniform(0.03, 0.9, 3) * au(0.4, 1.0), 0, 1),
        collar=au(1.3, 1.6),
        tex_seed=int(ap.integers(1 << 31)),
    )


# ------------------------------------------------------------------------------------------ geometry


def mix_identities(a: Identity2, b: Identity2, phi: float) -> Identity2:
    """The identity ``phi·a + (1 − phi)·b`` of SynFace's identity mixup (Qiu et al., ICCV 2021).

    Continuous traits (shape, feature sizes, pigments, colours) are interpolated; what is a choice
    rather than an amount (hair style, beard, glasses style, freckle count, texture seed, and arrays
    whose lengths differ, such as moles) is the dominant identity's (``a`` when ``phi >= 0.5``).
    """
    if not 0.0 <= phi <= 1.0:
        raise ValueError(f"identity mixup weight must be in [0, 1], got {phi!r}")
    dom = a if phi >= 0.5 else b
    out = {}
    for f in fields(Identity2):
        va, vb, vd = getattr(a, f.name), getattr(b, f.name), getattr(dom, f.name)
        if isinstance(vd, (bool, int, np.integer)) and not isinstance(vd, float):
            out[f.name] = vd
        elif isinstance(vd, np.ndarray):
            same = va.shape == vb.shape and va.dtype.kind == "f"
            out[f.name] = phi * va + (1 - phi) * vb if same else vd.copy()
        else:
            out[f.name] = float(phi * va + (1 - phi) * vb)
    return Identity2(**out)


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _gauss(s: np.ndarray, y: np.ndarray, cs: float, cy: float, ss: float, sy: float) -> np.ndarray:
    return np.exp(-(((s - cs) / ss) ** 2) - ((y - cy) / sy) ** 2)


def _profile(ident: Identity2, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-width, front depth and back depth of the face-and-neck rings at heights ``ys``."""
    i = ident
    jaw_y = i.mouth_y + 0.12
    under = i.chin_y + 0.05
    ctrl_y = np.array([-0.6, -0.45, -0.1, 0.2, 0.5, jaw_y, i.chin_y - 0.06, i.chin_y, under, 1.45, 2.1])
    a = [i.width * 0.985, i.width * 0.985, i.width, i.cheek_w, 0.93 * i.cheek_w, i.jaw_w, i.chin_w + 0.1,
         i.chin_w, i.neck_w, i.neck_w * 1.05, i.neck_w * 1.25]  # fmt: skip
    f = [i.face_depth * 0.98, i.face_depth * 0.98, i.face_depth, i.face_depth * 0.98, i.face_depth * 0.96,
         i.face_depth * 0.9, i.face_depth * 0.86, i.face_depth * 0.78, 0.33, 0.3, 0.35]  # fmt: skip
    k = [i.back_depth, i.back_depth, i.back_depth * 0.97, i.back_depth * 0.88, i.back_depth * 0.62, 0.46,
         0.42, 0.42, 0.4, 0.38, 0.42]  # fmt: skip
    fine = np.linspace(-0.6, 2.2, 281)
    kernel = np.exp(-0.5 * (np.arange(-18, 19) / 6.0) ** 2)  # Gaussian, sigma 0.06 face units
    kernel /= kernel.sum()
    out = []
    for vals in (a, f, k):
        v = np.interp(fine, ctrl_y, vals)
        v = np.convolve(np.pad(v, 18, mode="edge"), kernel, mode="valid")  # a smooth (C-inf) profile
        out.append(np.interp(ys, fine, v))
    return out[0], out[1], out[2]


def _rows(ident: Identity2) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Physical and texture heights of the rings, dome flags; returns (y_phys, y_uv, psi, n_dome)."""
    i = ident
    y_c = -0.45
    psi = np.radians(np.array([88.0, 80, 70, 60, 50, 40, 30, 20, 10]))
    dome_y = y_c - i.crown * np.sin(psi)
    special = [
        i.eye_y - i.eye_h,
        i.eye_y + 0.85 * i.eye_h,
        i.mouth_y - _SEAM_PHYS,
        i.mouth_y + _SEAM_PHYS,
    ]
    base = np.arange(y_c, i.chin_y + 0.001, 0.06)
    keep = [y for y in base if min(abs(y - s) for s in special) > 0.018]
    face = np.sort(np.array(keep + special))
    neck = np.array([i.chin_y + 0.05, 1.35, 1.65, 2.0])
    y_phys = np.concatenate([dome_y, face, neck])
    y_uv = y_phys.copy()
    seam = np.abs(y_phys - i.mouth_y) < 1.5 * _SEAM_PHYS
    y_uv[seam] = i.mouth_y + np.sign(y_phys[seam] - i.mouth_y) * SEAM_UV
    psi_all = np.concatenate([psi, np.zeros(len(face) + len(neck))])
    return y_phys, y_uv, psi_all, len(dome_y)


def _column_positions() -> np.ndarray:
    """Fractions of the half perimeter at the columns: dense at the front (u=0), sparse at the back."""
    u = np.linspace(-1.0, 1.0, 2 * HALF_COLS + 1)
    return 0.3 * u + 0.7 * u**3


def _rings(
    half_w: np.ndarray, front: np.ndarray, back: np.ndarray, q_f: float, q_b: float, cz: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample every ring by arc length: x, z [rows, cols] and signed arc length s [rows, cols]."""
    w = np.linspace(0.0, math.pi, 241)
    sw, cw = np.sin(w), np.cos(w)
    e = np.where(cw >= 0, 2.0 / q_f, 2.0 / q_b)
    xs = half_w[:, None] * np.abs(sw)[None] ** e[None]
    depth = np.where(cw >= 0, front[:, None], back[:, None])
    zs = cz[:, None] + depth * np.sign(cw)[None] * np.abs(cw)[None] ** e[None]
    seg = np.hypot(np.diff(xs, axis=1), np.diff(zs, axis=1))
    cum = np.concatenate([np.zeros((len(xs), 1)), np.cumsum(seg, axis=1)], axis=1)
    frac = _column_positions()
    x = np.empty((len(xs), len(frac)))
    z = np.empty_like(x)
    s = np.empty_like(x)
    for r in range(len(xs)):
        half = cum[r, -1]
        t = np.abs(frac) * half
        x[r] = np.sign(frac) * np.interp(t, cum[r], xs[r])
        z[r] = np.interp(t, cum[r], zs[r])
        s[r] = frac * half
    return x, z, s


def _grid_normals(v: np.ndarray) -> np.ndarray:
    """Unit normals [rows, cols, 3] of a grid surface (outward for rows top→bottom, cols left→right).

    Central differences inside, one-sided at the borders, as ``np.gradient`` but without its overhead.
    """
    dr = np.empty_like(v)
    dc = np.empty_like(v)
    dr[1:-1] = v[2:] - v[:-2]
    dr[0], dr[-1] = v[1] - v[0], v[-1] - v[-2]
    dc[:, 1:-1] = v[:, 2:] - v[:, :-2]
    dc[:, 0], dc[:, -1] = v[:, 1] - v[:, 0], v[:, -1] - v[:, -2]
    n = np.empty_like(v)
    n[..., 0] = dc[..., 1] * dr[..., 2] - dc[..., 2] * dr[..., 1]
    n[..., 1] = dc[..., 2] * dr[..., 0] - dc[..., 0] * dr[..., 2]
    n[..., 2] = dc[..., 0] * dr[..., 1] - dc[..., 1] * dr[..., 0]
    n /= np.maximum(np.sqrt((n * n).sum(-1, keepdims=True)), 1e-9)
    return n


def hair_mask(ident: Identity2, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hair coverage in [0, 1] at texture points (s, y), fixed per identity (its style).

    The lower edge of the hair runs along the front hairline, down the temples to the sideburns,
    round the ear and back to the nape (or to the shoulders for long hair).
    """
    i = ident
    style = HAIR_STYLES[i.hair_style]
    a = np.abs(s)
    ear_s = _ear_s(i)
    soft = 0.03
    recede = 0.2 if style == "receding" else 0.05
    front = i.hair_line - recede * _smoothstep((a - 0.12) / 0.35) + 0.02 * np.cos(9 * s)
    side_bottom = 0.05 + 0.15 * i.masc
    edge = front + (side_bottom - front) * _smoothstep((a - 0.5) / 0.2)
    nape = {"long": 1.9, "medium": 0.95, "afro": 0.8, "fringe": 0.75}.get(style, 0.62)
    edge = edge + (nape - edge) * _smoothstep((a - (ear_s + 0.02)) / 0.12)
    if style in ("long", "medium"):  # falls beside the face, behind the cheeks
        fall = _smoothstep((a - 0.6) / 0.1)
        edge = np.maximum(edge, edge + (nape - edge) * fall)
    m = _smoothstep((edge - y) / soft + 0.5)
    if style not in ("long", "afro", "medium"):  # short hair leaves the ear free
        m = m * (1 - _smoothstep(1.5 - np.hypot((a - ear_s) / 0.1, (y - 0.2) / 0.2)))
    if style == "fringe":
        fringe = _smoothstep((i.eye_y - i.brow_dy - 0.12 + 0.03 * np.cos(14 * s) - y) / soft + 0.5) * (
            a < 0.62
        )
        m = np.maximum(m, fringe)
    if style == "bald":
        m = m * _smoothstep((y + 0.1) / 0.15) * _smoothstep((a - 0.72) / 0.15)
    return np.clip(m, 0.0, 1.0)


def _ear_s(ident: Identity2) -> float:
    """Arc length of the ear centre from the midline (about a quarter of the ring)."""
    return 1.05 + 0.25 * (ident.width - 0.74)


def _hair_thickness(ident: Identity2) -> float:
    style = HAIR_STYLES[ident.hair_style]
    base = {"bald": 0.005, "buzz": 0.012, "short": 0.04, "medium": 0.07, "long": 0.07, "fringe": 0.06,
            "afro": 0.15, "receding": 0.03}[style]  # fmt: skip
    return base * ident.hair_volume


class Head:
    """Mesh, expression basis, texture atlas and landmark anchors of one identity (built once).

    Vertices form a ``rows × cols`` grid (ring rows top to bottom, columns from the back round the
    left side, the front and the right side to the back). ``vertices(expr)`` gives the mesh of one
    expression; ``texture`` is RGBA uint8 (RGB albedo, A specular strength) indexed by ``uv``.
    """

    def __init__(
        self,
        ident: Identity2,
        texture: bool = True,
        look: Mapping[str, float] | None = None,
        shading: Mapping[str, float] | None = None,
    ) -> None:
        self.ident = ident
        # Fixed when the head is built: how its features are painted (:data:`FEATURE_LOOK` with
        # ``look``'s entries replaced), its occlusion and how the lights take it (:data:`SHADING`).
        self.look = render_table(FEATURE_LOOK, look, "look")
        self.shading = render_table(SHADING, shading, "shading")
        i = ident
        y_phys, y_uv, psi, n_dome = _rows(i)
        y_c = y_phys[n_dome]
        half_w, front, back = _profile(i, np.maximum(y_phys, y_c))
        scale = np.cos(psi)
        cz = -i.forehead_slope * (1 - np.cos(psi)) * 2.0  # the forehead leans back, no kink at the join
        x, z, s = _rings(half_w * scale, front * scale, back * scale, i.q_front, i.q_back, cz)
        rows, cols = x.shape
        y = np.repeat(y_phys[:, None], cols, axis=1)
        base = np.stack([x, y, z], axis=-1)
        nrm = _grid_normals(base)
        uv_s, uv_y = s, np.repeat(y_uv[:, None], cols, axis=1)
        # Geometry follows physical heights (they differ from texture heights only at the lip seam).
        disp = self._displacement(uv_s, y)
        hm = hair_mask(i, uv_s, y)
        # The shell follows a mask smoothed round each ring (rows are unevenly spaced: not across them),
        # so its silhouette does not step from column to column.
        hm_geo = cv2.GaussianBlur(hm.astype(np.float32), (5, 1), 0).astype(np.float64)
        # Hair is not a helmet: its thickness wanders (locks, partings), fixed per identity.
        lumps = _noise(np.random.default_rng(i.tex_seed + 1), (64, 64), (6, 10))
        mx = ((uv_s + S_HALF) / (2 * S_HALF) * 63).astype(np.float32)
        my = ((uv_y - Y_TOP) / (Y_BOTTOM - Y_TOP) * 63).astype(np.float32)
        lump = cv2.remap(lumps, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
        disp = disp + hm_geo * _hair_thickness(i) * np.clip(1 + 0.45 * lump, 0.3, 2.0)
        rest = base + disp[..., None] * nrm
        if HAIR_STYLES[i.hair_style] in ("long", "medium"):  # an afro stands out by its thickness
            rest = self._curtain(rest, hm_geo, n_dome)
        self.rows, self.cols = rows, cols
        self.rest = rest.reshape(-1, 3)
        self.uv = np.stack([(uv_s + S_HALF) * TEX_RES, (uv_y - Y_TOP) * TEX_RES], -1).reshape(-1, 2)
        self.st = np.stack([uv_s, uv_y], -1).reshape(-1, 2)  # texture coordinates in face units
        self.hair = hm.reshape(-1)
        self.basis = self._expression_basis(uv_s, y, y_phys).reshape(len(EXPRESSIONS2), -1, 3)
        r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
        v0 = (r * cols + c).ravel()
        # Corners counter-clockwise on screen for a face seen from outside (x right, y down).
        self.quads = np.stack([v0, v0 + cols, v0 + cols + 1, v0 + 1], axis=1).astype(np.int32)
        self.ao = self._occlusion(uv_s, y).reshape(-1)
        self.landmark_st = np.array(
            [
                [-i.eye_dx, i.eye_y],
                [i.eye_dx, i.eye_y],
                [0.0, i.nose_y],
                [-i.mouth_hw, i.mouth_y],
                [i.mouth_hw, i.mouth_y],
            ]
        )
        self.lm_grid = self.locate(self.landmark_st)
        self.lm_vertices, self.lm_weights = self.grid_weights(self.lm_grid)
        self.lm_quads = (self.lm_grid[:, 0].astype(int).clip(0, rows - 2) * (cols - 1)
                         + self.lm_grid[:, 1].astype(int).clip(0, cols - 2))  # fmt: skip
        self.ears = self._ears()
        self.cache: dict[str, object] = {}  # per-head products of the renderer (hat masks)
        self.texture = paint_texture(i, self) if texture else None

    # ---------------------------------------------------------------------------------- identity shape

    def _displacement(self, s: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Identity shape modes: displacement along the normal [rows, cols] (face units)."""
        i = self.ident
        front = _smoothstep((0.95 - np.abs(s)) / 0.3)
        d = np.zeros_like(s)
        # Eye sockets with the eyeball bulging inside them; brow ridge above.
        for sg in (-1, 1):
            ex = sg * i.eye_dx
            d -= i.socket * _gauss(s, y, ex, i.eye_y - 0.01, 0.16, 0.1)
            d += 0.35 * i.socket * _gauss(s, y, ex, i.eye_y, i.eye_w * 1.1, i.eye_h * 1.8)
            d += i.brow_ridge * _gauss(s, y, ex * 0.9, i.eye_y - i.brow_dy + 0.02, 0.2, 0.06)
            d += i.cheekbone * _gauss(s, y, sg * 0.48, i.cheek_y, 0.16, 0.12)
            # Nose wings (alae) and the nasolabial fold.
            d += 0.35 * i.nose_protrude * _gauss(s, y, sg * i.nose_w * 0.8, i.nose_y + 0.03, 0.05, 0.045)
            d -= 0.012 * _gauss(s, y, sg * (i.nose_w + 0.06), i.nose_y + 0.15, 0.035, 0.12)
        # Nose: a ridge rising from the bridge to the tip, dropping fast under the tip.
        top = i.eye_y + 0.02
        t = np.clip((y - top) / max(i.nose_y - top, 1e-3), 0.0, None)
        rise = np.where(t <= 1, i.nose_bridge + (i.nose_protrude - i.nose_bridge) * t**1.6, 0.0)
        below = np.where(y > i.nose_y, i.nose_protrude * np.exp(-(((y - i.nose_y) / 0.055) ** 2)), 0.0)
        width = 0.055 + (i.nose_w * 0.7 - 0.055) * np.clip(t, 0, 1) ** 2
        d += (
            (np.where(t <= 1, rise, below) + i.nose_hump * _gauss(s, y, 0, top + 0.15, 0.1, 0.06))
            * np.exp(-((s / width) ** 2))
            * (y > top - 0.1)
        )
        d += 0.3 * i.nose_tip * _gauss(s, y, 0, i.nose_y, i.nose_tip, i.nose_tip)
        # Lips: upper and lower lip volumes, the philtrum groove, the groove under the lower lip.
        lips = np.exp(-((s / (i.mouth_hw * 0.95)) ** 4))
        d += 0.6 * i.lip_up * lips * _gauss(s, y, 0, i.mouth_y - i.lip_up * 0.6, 1e9, i.lip_up)
        d += 0.6 * i.lip_low * lips * _gauss(s, y, 0, i.mouth_y + i.lip_low * 0.6, 1e9, i.lip_low)
        d -= 0.012 * _gauss(s, y, 0, (i.nose_y + i.mouth_y) / 2 + 0.02, 0.025, 0.06)
        d -= 0.02 * _gauss(s, y, 0, i.mouth_y + 0.14, 0.14, 0.04)
        d += i.chin_bump * _gauss(s, y, 0, i.chin_y - 0.12, 0.14, 0.09)
        for bs, by, sgs, sgy, amp in i.bumps:
            d += amp * _gauss(s, y, bs, by, sgs, sgy)
        return d * front

    def _curtain(self, rest: np.ndarray, hm: np.ndarray, n_dome: int) -> np.ndarray:
        """Long hair falls from the widest ring: below it, hair vertices move radially outward (at
        their own angle round the vertical axis) to that ring's radius, never forward over the face."""
        i = self.ident
        r = rest.copy()
        rows = np.arange(n_dome, rest.shape[0])
        rows = rows[(rest[rows, 0, 1] < 0.3)]
        widest = int(rows[np.argmax(np.abs(rest[rows, :, 0]).max(1))])
        ref = rest[widest]
        cz = 0.5 * (ref[:, 2].max() + ref[:, 2].min())
        ang = np.arctan2(ref[:, 0], ref[:, 2] - cz)
        order = np.argsort(ang)
        ang_ref, rad_ref = ang[order], np.hypot(ref[order, 0], ref[order, 2] - cz)
        vol = _hair_thickness(i)
        for row in range(widest + 1, rest.shape[0]):
            x, z = r[row, :, 0], r[row, :, 2] - cz
            a = np.arctan2(x, z)
            rad = np.hypot(x, z)
            fall = _smoothstep((rest[row, :, 1] - ref[0, 1]) / 0.4)
            target = np.interp(a, ang_ref, rad_ref, period=2 * np.pi) * (1 + vol) * (1 - 0.08 * fall)
            # Beside the face (within ~70 degrees of the front) hair lies on the cheeks: no curtain
            # there, which would stretch quads across them.
            side = _smoothstep((np.abs(a) - 1.15) / 0.35)
            new = rad + hm[row] * side * np.maximum(target - rad, 0.0)
            r[row, :, 0] = new * np.sin(a)
            r[row, :, 2] = new * np.cos(a) + cz
        return r

    def _expression_basis(self, s: np.ndarray, y: np.ndarray, y_phys: np.ndarray) -> np.ndarray:
        """Displacement fields [n_expr, rows, cols, 3] of :data:`EXPRESSIONS2` at coefficient 1."""
        i = self.ident
        b = np.zeros((len(EXPRESSIONS2), *s.shape, 3))
        face = _smoothstep((0.9 - np.abs(s)) / 0.3) * (y < i.chin_y + 0.03)
        # smile: corners up, out and back; cheeks up and forward; lips stretch.
        for side in (-1, 1):
            g = _gauss(s, y, side * i.mouth_hw, i.mouth_y, 0.12, 0.09)
            b[0, ..., 0] += side * 0.035 * g
            b[0, ..., 1] -= 0.045 * g
            b[0, ..., 2] -= 0.02 * g
            c = _gauss(s, y, side * 0.38, i.cheek_y + 0.2, 0.15, 0.12)
            b[0, ..., 1] -= 0.025 * c
            b[0, ..., 2] += 0.015 * c
        # mouth opening: everything under the lip seam drops (the jaw), fading toward the neck.
        below = (y_phys[:, None] > i.mouth_y) * np.ones_like(s)
        # Only the lips part at the seam; beside the mouth the cheeks stretch down gradually.
        lips_part = np.maximum(
            _smoothstep((i.mouth_hw * 1.05 - np.abs(s)) / 0.06), _smoothstep((y - i.mouth_y) / 0.3)
        )
        jaw = below * lips_part * np.exp(-((s / 0.75) ** 4)) * np.clip(1 - (y - i.chin_y - 0.05) / 0.4, 0, 1)
        b[1, ..., 1] += 0.12 * jaw
        b[1, ..., 2] -= 0.03 * jaw
        # Corners of an open mouth come in a little.
        for side in (-1, 1):
            g = _gauss(s, y, side * i.mouth_hw, i.mouth_y, 0.06, 0.05)
            b[1, ..., 0] -= side * 0.015 * g
        # brow raise: the forehead and brows go up, fading at the upper lid and at the hairline.
        top = i.eye_y - i.eye_h
        br = _smoothstep((top - y) / 0.1) * _smoothstep((y - i.hair_line + 0.2) / 0.3) * face
        b[2, ..., 1] -= 0.045 * br
        # frown: inner brows down and together.
        for side in (-1, 1):
            g = _gauss(s, y, side * (i.eye_dx - 0.08), i.eye_y - i.brow_dy, 0.12, 0.08)
            b[3, ..., 0] -= side * 0.02 * g
            b[3, ..., 1] += 0.03 * g
            b[3, ..., 2] += 0.01 * g
        # blink: the upper lid slides down to the lower lid, squeezing the eye between them.
        bot = i.eye_y + 0.85 * i.eye_h
        gap = bot - top
        for side in (-1, 1):
            across = np.exp(-(((s - side * i.eye_dx) / (i.eye_w * 1.25)) ** 4))
            lid = np.where(
                y < top,
                _smoothstep((y - (i.eye_y - i.brow_dy)) / (top - (i.eye_y - i.brow_dy))),
                np.clip((bot - y) / gap, 0.0, 1.0),
            )
            b[4, ..., 1] += 0.92 * gap * lid * across
        # pucker: lips forward and in.
        g = _gauss(s, y, 0, i.mouth_y, i.mouth_hw * 1.1, 0.1)
        b[5, ..., 2] += 0.04 * g
        b[5, ..., 0] -= 0.25 * s * g
        return b

    def _occlusion(self, s: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cheap ambient occlusion [rows, cols] in (0, 1]: darker where the face is hollow.

        The identity displacement is sampled on a regular 0.02-unit grid of the face, and a point is
        occluded by how far it lies below its blurred neighbourhood (eye sockets, the sides of the
        nose, the mouth line, under the lower lip); sampled back at the vertices.
        """
        step = 0.02
        gs, gy = np.meshgrid(np.arange(-1.2, 1.2 + 1e-9, step), np.arange(-1.0, 1.5 + 1e-9, step))
        d = self._displacement(gs, gy).astype(np.float32)
        hollow = cv2.GaussianBlur(d, (0, 0), 3.0) - d
        sh = self.shading
        ao = (1.0 - np.clip(hollow * sh["ao_gain"], 0.0, sh["ao_max"])).astype(np.float32)
        mx = ((s + 1.2) / step).astype(np.float32)
        my = ((np.minimum(y, 1.5) + 1.0) / step).astype(np.float32)
        out = cv2.remap(ao, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.astype(np.float64)

    def locate(self, st: np.ndarray) -> np.ndarray:
        """Continuous grid coordinates (row, col) [k, 2] of texture points ``st`` [k, 2] (face units).

        Rings are straight lines in texture space (``y`` depends on the row only), so the inverse of
        the bilinear texture map is exact: the row fraction from ``y``, then the column from ``s``
        along the interpolated ring.
        """
        grid = self.st.reshape(self.rows, self.cols, 2)
        ys = grid[:, 0, 1]
        out = np.empty((len(st), 2))
        for k, (s, y) in enumerate(np.asarray(st, np.float64)):
            r = int(np.clip(np.searchsorted(ys, y, side="right") - 1, 0, self.rows - 2))
            t = (y - ys[r]) / (ys[r + 1] - ys[r])
            ring = (1 - t) * grid[r, :, 0] + t * grid[r + 1, :, 0]
            c = int(np.clip(np.searchsorted(ring, s, side="right") - 1, 0, self.cols - 2))
            a = (s - ring[c]) / (ring[c + 1] - ring[c])
            out[k] = (r + t, c + a)
        return out

    def grid_weights(self, rc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertex ids [k, 3] and weights [k, 3] of grid points ``rc`` in the rasteriser's triangles.

        A quad (r, c) is split into triangles (r,c)-(r+1,c)-(r+1,c+1) and (r,c)-(r+1,c+1)-(r,c+1);
        screen positions inside a triangle are linear in (row, col), as the rasteriser interpolates.
        """
        ids, ws = [], []
        for rr, cc in rc:
            r, c = min(int(rr), self.rows - 2), min(int(cc), self.cols - 2)
            t, a = rr - r, cc - c
            v00, v10, v11, v01 = (
                r * self.cols + c,
                (r + 1) * self.cols + c,
                (r + 1) * self.cols + c + 1,
                r * self.cols + c + 1,
            )
            if t >= a:
                ids.append([v00, v10, v11])
                ws.append([1 - t, t - a, a])
            else:
                ids.append([v00, v11, v01])
                ws.append([1 - a, t, a - t])
        return np.array(ids), np.array(ws)

    def _ears(self) -> dict[str, np.ndarray]:
        """Two ears as small double-sided grids [5, 4, 3] (an oval flap) at the sides of the head.

        Each ear takes the texture of the skin at its root (``<side>_uv``, [5, 4, 2]).
        """
        i = self.ident
        h, w = 0.3 * i.ear_size, 0.17 * i.ear_size
        aa, bb = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(0, 1, 4), indexing="ij")
        width = w * np.sqrt(np.clip(1 - aa**2, 0.05, 1))
        y0 = 0.5 * (i.eye_y + i.nose_y) + 0.02
        st = self.st.reshape(self.rows, self.cols, 2)
        rest = self.rest.reshape(self.rows, self.cols, 3)
        uv = self.uv.reshape(self.rows, self.cols, 2)
        r = int(np.argmin(np.abs(st[:, 0, 1] - y0)))
        out = {}
        for name, sg in (("left", -1), ("right", 1)):
            c = int(np.argmin(np.abs(st[r, :, 0] - sg * _ear_s(i))))
            root = rest[r, c] - np.array([0.0, 0.0, 0.02])
            out_dir = np.array([sg * 0.42, 0.0, -0.9])  # backward and outward from the skull
            pts = (
                root
                + np.stack([np.zeros_like(aa), aa * h, np.zeros_like(aa)], -1)
                + (bb * width)[..., None] * out_dir
            )
            pts[..., 0] += sg * 0.04 * np.sin(np.pi * bb) * (1 - aa**2)  # the rim curls out
            out[name] = pts
            out[name + "_uv"] = np.broadcast_to(uv[r, c], (*aa.shape, 2)).copy()
        return out

    # ------------------------------------------------------------------------------------ per image

    def vertices(self, expr: np.ndarray) -> np.ndarray:
        """Head vertices [rows*cols, 3] for expression coefficients ``expr`` (:data:`EXPRESSIONS2`)."""
        return self.rest + np.tensordot(np.asarray(expr, np.float64), self.basis, axes=1)

    def normals(self, verts: np.ndarray) -> np.ndarray:
        """Per-vertex unit normals of the head grid."""
        return _grid_normals(verts.reshape(self.rows, self.cols, 3)).reshape(-1, 3)

    def landmarks3d(self, verts: np.ndarray) -> np.ndarray:
        """The 5 landmarks [5, 3] on the mesh ``verts`` (barycentric in their triangles)."""
        return np.einsum("kj,kjd->kd", self.lm_weights, verts[self.lm_vertices])


# ------------------------------------------------------------------------------------------ texture


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise (unit-ish std) of ``shape``: a coarse Gaussian grid upsampled bicubically."""
    g = rng.standard_normal(cells).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _px(s: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    return np.stack([(np.asarray(s) + S_HALF) * TEX_RES, (np.asarray(y) - Y_TOP) * TEX_RES], -1)


def _poly(mask: np.ndarray, pts: np.ndarray, value: float = 1.0) -> None:
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], value, cv2.LINE_AA, 4)


def _blend(tex: np.ndarray, alpha: np.ndarray, colour: np.ndarray | float) -> None:
    a = alpha[..., None]
    tex *= 1 - a
    tex += a * np.asarray(colour, np.float32)


#: the face window of the atlas (s, y ranges): features are painted inside it only
_FACE_S, _FACE_Y = (-1.0, 1.0), (-1.0, 1.45)


#: how the renderer shades the head's relief: ambient occlusion is ``1 - clip(ao_gain × depth below
#: the blurred surface, 0, ao_max)`` (eye sockets, beside the nose, the mouth line), and ``ao_direct``
#: is the share of it the lights take too (0: the ambient light only; a cheap stand-in for the shadow
#: a brow ridge or a nose casts, which a shadow-less Lambert term does not draw)
SHADING: Mapping[str, float] = MappingProxyType({"ao_gain": 9.0, "ao_max": 0.5, "ao_direct": 0.0})

#: How large and dark the painted features are. Aligned LFW crops, averaged and normalised by the
#: cheek, are dark from the brows to below the eyes (59-68 % of the cheek over ~12 px of a 64 px crop)
#: and round the mouth, where the earlier renders showed a small dark iris in bright skin (a 6 px
#: dip, the skin under the eye at 109-120 %). Brows here are thicker (x1.8), longer (x1.35), more
#: solid and darker; the eye surround more pigmented, the upper lid shaded, a shadow under the eye,
#: a heavier lash line; lips painted 1.4x fuller and darker. Measured at the demo's budget: LFW 74.9
#: -> 75.8 % (docs/synthfaces.md). Since ``REVISION`` 4 the lids (0.35 -> 0.6), the shadow under the
#: eye (0.2 -> 0.4) and the brows (0.3 -> 0.5) are darker, with the geometry of
#: :func:`sample_identity2` (lower brows on a heavier ridge, larger eyes, a larger nose), chosen as
#: the renders whose deep features lie nearest real faces' (docs/synthfaces.md, nineteenth session).
#: ``REVISION`` 5 (the screen's coordinate search, twentieth session): brows painted thinner (1.8 ->
#: 1.38), the eye surround more pigmented (0.6 -> 0.78), the lids lighter again (0.6 -> 0.46) and
#: the shadow under the eye darker (0.4 -> 0.52).
FEATURE_LOOK: Mapping[str, float] = MappingProxyType(
    {
        "brow_thick": 1.3846,
        "brow_len": 1.35,
        "brow_solid": 0.5,
        "brow_dark": 0.5,
        "eye_mel": 0.78,
        "lid_shadow": 0.4615,
        "under_eye": 0.52,
        "lash": 2.6,
        "lip": 1.4,
        "lip_dark": 0.25,
    }
)


def render_table(base: Mapping[str, float], over: Mapping[str, float] | None, what: str) -> dict[str, float]:
    """``base`` (:data:`FEATURE_LOOK` or :data:`SHADING`) with ``over``'s entries replaced, checked: an
    unknown entry or a value that is not a finite number >= 0 raises ``ValueError`` naming it."""
    out = dict(base)
    for k, v in (over or {}).items():
        if k not in base:
            raise ValueError(f"unknown SynthFaces v2 {what} entry {k!r}; expected one of {', '.join(base)}")
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"SynthFaces v2 {what} entry {k!r} must be a finite number >= 0, got {v!r}")
        out[k] = float(v)
    return out


def paint_texture(ident: Identity2, head: Head) -> np.ndarray:
    """The identity's RGBA uint8 atlas [TEX_H, TEX_W, 4]: albedo RGB and specular strength.

    Smooth pigment maps are computed at half resolution; facial features are painted inside the
    face window only; hair and the collar cover the whole atlas.
    """
    i = ident
    look = head.look
    rng = np.random.default_rng(i.tex_seed)
    H, W = TEX_H, TEX_W
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    s = xs / TEX_RES - S_HALF
    y = ys / TEX_RES + Y_TOP
    # Pigment maps (half resolution): blotchy melanin, darker round the eyes; blood redder on the
    # cheeks and nose.
    h2, w2 = H // 2, W // 2
    s2, y2 = s[::2, ::2], y[::2, ::2]
    mel = i.melanin * (
        1 + i.blotch * _noise(rng, (h2, w2), (12, 20)) + 0.04 * _noise(rng, (h2, w2), (40, 70))
    )
    red = np.zeros((h2, w2), np.float32)
    for sg in (-1, 1):
        red += 0.35 * _gauss(s2, y2, sg * 0.42, i.nose_y - 0.02, 0.15, 0.12)
        mel = mel * (1 + look["eye_mel"] * _gauss(s2, y2, sg * i.eye_dx, i.eye_y + 0.04, 0.14, 0.08))
    red += 0.3 * _gauss(s2, y2, 0, i.nose_y - 0.03, 0.07, 0.1)
    blood = i.blood * (1 + red + 0.15 * _noise(rng, (h2, w2), (16, 28)))
    tex = cv2.resize(skin_albedo(mel, blood).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    spec = np.full((H, W), i.shine, np.float32)
    # The face window: views into tex/spec with their own coordinates.
    c0, c1 = (int((v + S_HALF) * TEX_RES) for v in _FACE_S)
    r0, r1 = (int((v - Y_TOP) * TEX_RES) for v in _FACE_Y)
    ft, fsp, fs, fy = tex[r0:r1, c0:c1], spec[r0:r1, c0:c1], s[r0:r1, c0:c1], y[r0:r1, c0:c1]
    fh, fw = fs.shape
    fsp += 0.15 * _gauss(fs, fy, 0, i.nose_y - 0.1, 0.08, 0.2) + 0.1 * _gauss(
        fs, fy, 0, i.hair_line + 0.2, 0.3, 0.12
    )

    def local() -> np.ndarray:
        return np.zeros((fh, fw), np.float32)

    def to_win(pts: np.ndarray) -> np.ndarray:
        return pts - np.array([c0, r0], np.float64)

    # Wrinkles with age: forehead lines, crow's feet, nasolabial folds.
    old = _clip((i.age - 30) / 45, 0.0, 1.0)
    if old > 0:
        lines = local()
        for k in range(int(2 + 3 * old)):
            yy = i.eye_y - i.brow_dy - 0.1 - 0.06 * k
            t = np.linspace(-0.35, 0.35, 20)
            _poly_line(lines, np.stack([t, yy + 0.04 * t**2 * (1 + k)], 1), 1, (c0, r0))
        for sg in (-1, 1):
            t = np.linspace(0, 1, 12)
            fold = np.stack(
                [sg * (i.nose_w + 0.03 + 0.12 * t), i.nose_y + 0.03 + (i.mouth_y - i.nose_y + 0.06) * t], 1
            )
            _poly_line(lines, fold, 2, (c0, r0))
            for k in range(3):
                a0 = sg * (i.eye_dx + i.eye_w + 0.02)
                _poly_line(
                    lines,
                    np.array([[a0, i.eye_y + 0.03 * (k - 1)], [a0 + sg * 0.08, i.eye_y + 0.05 * (k - 1)]]),
                    1,
                    (c0, r0),
                )
        lines = cv2.GaussianBlur(lines, (3, 3), 0)
        _blend(ft, np.clip(lines * 0.25 * old, 0, 1), ft * 0.55)
    # Freckles and moles.
    if i.freckles:
        dots = local()
        for a, b in zip(rng.normal(0, 0.3, i.freckles), rng.normal(i.nose_y - 0.05, 0.15, i.freckles)):
            cv2.circle(dots, tuple(int(v) for v in to_win(_px(a, b))), 1, 1.0, -1)
        _blend(ft, dots * 0.35, skin_albedo(i.melanin * 2.2, i.blood))
    if len(i.moles):
        dots = local()
        for ms, my, mr in i.moles:
            c = to_win(_px(ms, my))
            cv2.circle(
                dots,
                (int(c[0] * 16), int(c[1] * 16)),
                max(1, int(mr * TEX_RES * 16)),
                1.0,
                -1,
                cv2.LINE_AA,
                4,
            )
        _blend(ft, dots * 0.8, skin_albedo(i.melanin * 3 + 0.6, i.blood))
    # Beard shadow / stubble / beard: a region on the jaw, chin and upper lip.
    if i.beard:
        reg = _beard_region(i, fs, fy)
        speck = np.clip(0.6 + 0.6 * rng.standard_normal((fh, fw)).astype(np.float32), 0, 1)
        col = i.hair_colour * 0.8
        if i.beard == 1:
            _blend(ft, reg * speck * 0.35 * i.beard_density, col)
        else:
            _blend(ft, reg * np.clip(speck + 0.3, 0, 1) * (0.6 + 0.35 * i.beard_density), col)
            fsp[:] = fsp * (1 - reg) + 0.08 * reg
    elif i.masc > 0.55:  # shaved: a faint grey-blue shadow
        _blend(ft, _beard_region(i, fs, fy) * 0.12, np.array([0.25, 0.27, 0.3]))
    # Lips.
    lips = local()
    t = np.linspace(-1, 1, 25)
    hw = i.mouth_hw
    lip_up, lip_low = i.lip_up * look["lip"], i.lip_low * look["lip"]
    bow = 0.25 * lip_up * np.exp(-(((np.abs(t) - 0.22) / 0.14) ** 2)) - 0.2 * lip_up * np.exp(
        -((t / 0.08) ** 2)
    )
    up = np.stack([t * hw, i.mouth_y - SEAM_UV - lip_up * (1 - t**4) - bow], 1)
    low = np.stack([t * hw * 0.95, i.mouth_y + SEAM_UV + lip_low * (1 - t**2)], 1)[::-1]
    _poly(lips, to_win(_px(up[:, 0], up[:, 1])))
    _poly(
        lips,
        to_win(
            _px(np.concatenate([[-hw, hw], low[:, 0]]), np.concatenate([[i.mouth_y, i.mouth_y], low[:, 1]]))
        ),
    )
    lips = cv2.GaussianBlur(lips, (3, 3), 0)
    _blend(ft, lips * 0.9, i.lip_colour * (1 - look["lip_dark"]))
    fsp[:] = fsp * (1 - lips) + 0.35 * lips
    # Mouth interior between the seam rows: teeth near the lips, darkness between.
    rel = (fy - i.mouth_y) / SEAM_UV  # -1 at the upper lip ... +1 at the lower lip
    band = ((np.abs(rel) < 1) & (np.abs(fs) < hw * (1 - 0.5 * rel**2))).astype(np.float32)
    teeth = ((rel < -0.05) | (rel > 0.7)) & (np.abs(fs) < hw * 0.8)
    inner = np.where(teeth[..., None], np.array([0.80, 0.76, 0.68]), np.array([0.16, 0.05, 0.05]))
    _blend(ft, band, inner.astype(np.float32))
    # Eyes: sclera, iris, pupil inside the almond between the lids, lash lines and lid crease.
    for sg in (-1, 1):
        _paint_eye(tex, spec, i, sg, s, y, look)
    # Brows.
    brows = local()
    for sg in (-1, 1):
        t = np.linspace(0, 1, 10)
        blen = i.brow_len * look["brow_len"]
        inner_s = sg * (i.eye_dx - blen * 0.75)
        bx = inner_s + sg * t * 2 * blen
        by = i.eye_y - i.brow_dy - i.brow_arch * np.sin(np.pi * t**0.8) + i.brow_tilt * t
        th = i.brow_thick * look["brow_thick"] * (1.1 - 0.6 * t)
        pts = np.concatenate([np.stack([bx, by - th / 2], 1), np.stack([bx, by + th / 2], 1)[::-1]])
        _poly(brows, to_win(_px(pts[:, 0], pts[:, 1])))
    strands = np.clip(0.55 + 0.5 * _noise(rng, (fh, fw), (fh // 2, fw // 6)), 0, 1)
    strands = strands * (1 - look["brow_solid"]) + look["brow_solid"]
    brows = cv2.GaussianBlur(brows, (3, 3), 0) * strands * i.brow_density
    brow_col = np.minimum(i.hair_colour, 0.4) * 0.6 + skin_albedo(i.melanin * 4 + 1.5, i.blood) * 0.4
    _blend(ft, brows, brow_col * (1 - look["brow_dark"]))
    # The shaded upper lid (under the brow ridge) and the shadow under the eye, baked into the albedo
    # as in photographed skin textures.
    lid, under = look["lid_shadow"], look["under_eye"]
    if lid or under:
        shade = np.ones((fh, fw), np.float32)
        for sg in (-1, 1):
            ex = sg * i.eye_dx
            shade -= lid * _gauss(fs, fy, ex, i.eye_y - i.eye_h - 0.025, 0.13, 0.045)
            shade -= under * _gauss(fs, fy, ex, i.eye_y + i.eye_h + 0.045, 0.12, 0.04)
        ft *= np.clip(shade, 0.2, 1)[..., None]
    # Hair: streaked colour with highlights where the style puts hair.
    hm = hair_mask(i, s, y).astype(np.float32)
    streak = _noise(rng, (H, W), (max(4, H // 24), W // 2))
    shade = np.clip(1 + 0.28 * streak + 0.12 * _noise(rng, (H, W), (8, 16)), 0.3, 1.8)
    hair_rgb = np.clip(i.hair_colour.astype(np.float32)[None, None] * shade[..., None], 0, 1)
    if HAIR_STYLES[i.hair_style] in ("buzz", "bald", "receding"):
        hair_rgb = hair_rgb * 0.7 + tex * 0.3
    if i.part:
        hm = hm * (1 - 0.8 * _gauss(s, y, i.part, i.hair_line - 0.15, 0.012, 0.25))
    _blend(tex, hm, hair_rgb)
    spec = spec * (1 - hm) + 0.18 * hm
    head.cache["tex_hair"] = hm
    # Texel-scale detail (a texel is about a pixel of a 112-pixel crop): pores and blemishes on the
    # skin, strands in the hair (noise smeared down the head). Real crops have ~1.4x the edge energy
    # of the smooth shading alone.
    grain = rng.standard_normal((H, W)).astype(np.float32)
    strands = cv2.blur(grain, (1, 7))
    tex *= np.clip(1 + 0.05 * grain * (1 - hm) + 0.7 * strands * hm, 0.3, 1.7)[..., None]
    rc = int((i.collar - 0.03 - Y_TOP) * TEX_RES)
    if rc < H:
        collar = _smoothstep((y[rc:] - i.collar) / 0.02 + 0.5) * (1 - hm[rc:])
        _blend(tex[rc:], collar, i.clothes.astype(np.float32))
    out = np.empty((H, W, 4), np.uint8)
    out[..., :3] = np.clip(tex * 255, 0, 255)
    out[..., 3] = np.clip(spec * 255, 0, 255)
    return out


def _poly_line(mask: np.ndarray, pts: np.ndarray, thickness: int, origin: tuple[int, int] = (0, 0)) -> None:
    px = _px(pts[:, 0], pts[:, 1]) - np.array(origin, np.float64)
    cv2.polylines(mask, [np.round(px * 16).astype(np.int32)], False, 1.0, thickness, cv2.LINE_AA, 4)


def _beard_region(i: Identity2, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    a = np.abs(s)
    jaw = _smoothstep((y - (i.nose_y + 0.12 + 0.3 * (a > 0.2) * (a - 0.2))) / 0.05)
    jaw *= _smoothstep((0.78 - a) / 0.06) * _smoothstep((i.chin_y + 0.22 - y) / 0.05)
    tache = _gauss(s, y, 0, (i.nose_y + i.mouth_y) / 2 + 0.02, i.mouth_hw * 1.15, 0.06)
    lips = _gauss(s, y, 0, i.mouth_y, i.mouth_hw * 1.05, 0.045)
    chin = _gauss(s, y, 0, i.mouth_y + 0.18, 0.16, 0.16)
    if i.beard == 2:
        reg = tache
    elif i.beard == 3:
        reg = np.maximum(tache, chin)
    else:
        reg = np.maximum(jaw, tache)
    return np.clip(reg * (1 - 0.9 * lips), 0, 1).astype(np.float32)


def _paint_eye(
    tex: np.ndarray,
    spec: np.ndarray,
    i: Identity2,
    sg: int,
    s: np.ndarray,
    y: np.ndarray,
    look: Mapping[str, float],
) -> None:
    """Paint one eye (``sg`` -1 left, +1 right) centred on its landmark (the iris centre)."""
    cx, cy = sg * i.eye_dx, i.eye_y
    top, bot = i.eye_y - i.eye_h, i.eye_y + 0.85 * i.eye_h
    x0 = int((cx - 0.25 + S_HALF) * TEX_RES)
    y0 = int((cy - 0.15 - Y_TOP) * TEX_RES)
    x1, y1 = x0 + int(0.5 * TEX_RES), y0 + int(0.3 * TEX_RES)
    ss, yy = s[y0:y1, x0:x1], y[y0:y1, x0:x1]
    sub, subspec = tex[y0:y1, x0:x1], spec[y0:y1, x0:x1]
    u = (ss - cx) / i.eye_w
    tilt = -sg * i.eye_tilt * (ss - cx)
    # Almond: the upper lid arc reaches ``top``, the lower lid ``bot``; corners at u = ±1.
    upper = cy + tilt - (cy - top) * np.clip(1 - u**2, 0, 1) ** 0.7 * 1.0
    lower = cy + tilt + (bot - cy) * np.clip(1 - u**2, 0, 1) ** 0.9
    inside = (
        _smoothstep((yy - upper) * TEX_RES + 0.5)
        * _smoothstep((lower - yy) * TEX_RES + 0.5)
        * (np.abs(u) < 1)
    )
    _blend(sub, inside * 0.92, np.array([0.76, 0.72, 0.68]))
    d = np.hypot(ss - cx, yy - cy)
    iris = _smoothstep((i.iris_r - d) * TEX_RES + 0.5) * inside
    ring = np.clip(0.75 + 0.6 * (d / i.iris_r), 0.6, 1.3)[..., None]
    sub *= 1 - iris[..., None]
    sub += iris[..., None] * np.clip(i.iris * (1.6 - ring), 0, 1).astype(np.float32)
    pupil = _smoothstep((0.42 * i.iris_r - d) * TEX_RES + 0.5) * inside
    _blend(sub, pupil, np.array([0.03, 0.02, 0.02]))
    subspec[:] = subspec * (1 - inside) + 0.5 * inside
    # Lash line along the upper lid, a thin lower lid line, the crease above.
    lash = _smoothstep(look["lash"] - np.abs(yy - upper) * TEX_RES) * (np.abs(u) < 1.08)
    _blend(sub, lash * 0.85, np.array([0.06, 0.04, 0.035]))
    low = _smoothstep(1.0 - np.abs(yy - lower) * TEX_RES) * (np.abs(u) < 1.0)
    _blend(sub, low * 0.35, sub * 0.5)
    crease = _smoothstep(1.2 - np.abs(yy - (upper - 0.035)) * TEX_RES) * (np.abs(u) < 0.9)
    _blend(sub, crease * 0.25, sub * 0.55)
