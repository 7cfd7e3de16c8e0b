"""One knee as the X-ray beam sees it: attenuation of bones and soft tissue, rendered around its 16 landmarks.

Everything happens in the *knee frame* (mm, right-knee orientation: lateral towards -u, v down, tibial landmark 4 at
the origin) on a regular grid (:class:`KneeCanvas`); the film renderer later maps the grid into the radiograph.

The bones are built *from* the landmarks, so the landmarks lie on visible contours by construction:

* tibia: the plateau is the monotone cubic (PCHIP) through T0-T8 (spines at T3/T5); below its margins T0/T8 the
  metaphysis narrows to the shaft;
* femur: the condylar outline is the PCHIP through F9-F15 (notch apex F12); above F9/F15 the condyles narrow to a
  shaft tilted a few degrees laterally (anatomical valgus);
* fibula (lateral, partly behind the tibia), patella (faint, above the notch), soft-tissue envelope (fat + muscle).

Attenuation is a line integral: each bone is a tube of cortical shell around trabecular bone or marrow, so its
projection has the chord profile ``2 sqrt(d (2R - d))`` across (``d`` from the edge, ``R`` half the width); the
shafts therefore show cortical walls brighter than the medullary canal without drawing them. The plateau and the
condyles are seen edge-on, so their outline is a step with a bright subchondral plate that thickens with the KL grade
(sclerosis). Osteophytes grow at the joint margins from KL 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kneel.synth.textures import texture_window

__all__ = ["KneeAnatomy", "KneeCanvas", "Osteophyte", "sample_anatomy", "render_knee"]

MU_SOFT = 0.014
"""Linear attenuation of muscle-like soft tissue, 1/mm (about 60 keV)."""
MU_FAT = 0.011
"""Linear attenuation of fat, 1/mm."""
MU_BONE = 0.050
"""Attenuation of cortical bone *in excess of* the soft tissue it displaces, 1/mm."""


@dataclass(frozen=True)
class KneeCanvas:
    """A grid in the knee frame: pixel ``(row i, col j)`` has its centre at ``(u0 + j * res, v0 + i * res)`` mm."""

    u0: float
    v0: float
    res: float
    rows: int
    cols: int

    @property
    def u(self) -> np.ndarray:
        return (self.u0 + self.res * np.arange(self.cols)).astype(np.float32)

    @property
    def v(self) -> np.ndarray:
        return (self.v0 + self.res * np.arange(self.rows)).astype(np.float32)

    def col_range(self, lo: float, hi: float) -> slice:
        """Columns whose centres lie within ``[lo, hi]`` mm (clipped to the canvas)."""
        a = int(np.clip(np.floor((lo - self.u0) / self.res), 0, self.cols))
        b = int(np.clip(np.ceil((hi - self.u0) / self.res) + 1, 0, self.cols))
        return slice(a, b)

    def row_range(self, lo: float, hi: float) -> slice:
        a = int(np.clip(np.floor((lo - self.v0) / self.res), 0, self.rows))
        b = int(np.clip(np.ceil((hi - self.v0) / self.res) + 1, 0, self.rows))
        return slice(a, b)


@dataclass(frozen=True)
class Osteophyte:
    """A marginal spur: at landmark ``margin`` (0, 8, 9 or 15), ``size`` mm long."""

    margin: int
    size: float
    angle_deg: float


@dataclass(frozen=True)
class KneeAnatomy:
    """Everything about one knee except where it lies in the film (all lengths in mm)."""

    shape: np.ndarray  # (16, 2) landmarks in the knee frame
    kl: int
    # tibia
    tib_shaft_half: float
    tib_flare_len: float
    tib_shaft_offset: float
    tib_bulge: float
    tib_cortex_epi: float
    tib_cortex_shaft: float
    tib_trabecular: float
    tib_edge_mm: float
    tib_plate: float
    tib_plate_tau: float
    tib_sclerosis_med: float
    tib_sclerosis_lat: float
    tib_rim_offset: float
    tib_rim_amp: float
    tib_scar_depth: float
    tib_wiggle: np.ndarray  # (8,) mm
    # femur
    fem_shaft_half: float
    fem_flare_len: float
    fem_tilt_deg: float
    fem_bulge: float
    fem_corner: float
    fem_edge_mm: float
    fem_cortex_epi: float
    fem_cortex_shaft: float
    fem_trabecular: float
    fem_plate: float
    fem_plate_tau: float
    fem_sclerosis_med: float
    fem_scar_height: float
    fem_wiggle: np.ndarray  # (6,) mm
    fem_posterior: float  # posterior condyle outlines: mm above the distal outline
    fem_posterior_amp: float
    scar_amp: float
    scar_wave: float
    # fibula
    fib_head_w: float
    fib_head_h: float
    fib_head_depth: float
    fib_drop: float
    fib_overlap: float
    fib_shaft_half: float
    fib_gap: float
    # patella
    pat_a: float
    pat_b: float
    pat_depth: float
    pat_du: float
    pat_dv: float
    pat_density: float
    # soft tissue
    soft_half: float
    soft_thigh: float
    soft_calf: float
    soft_fat: float
    soft_depth: float
    soft_offset: float
    # texture
    tex_amp: float
    tex_offset: tuple[int, int]
    osteophytes: tuple[Osteophyte, ...] = field(default_factory=tuple)
    implant: bool = False  # total knee replacement: metal components instead of the articular surfaces


_OSTEO_SIZE = {0: (0.0, 0.0), 1: (0.8, 2.0), 2: (1.8, 4.0), 3: (3.0, 6.5), 4: (4.5, 9.0)}
_OSTEO_PROB = {0: 0.0, 1: 0.35, 2: 0.7, 3: 0.85, 4: 0.95}


def sample_anatomy(shape: np.ndarray, kl: int, rng: np.random.Generator) -> KneeAnatomy:
    """Draw the anatomy of one knee around its landmarks; OA signs (spurs, sclerosis) follow the KL grade."""
    s = np.asarray(shape, dtype=np.float64)
    wp = float(s[8, 0] - s[0, 0])
    wc = float(s[15, 0] - s[9, 0])
    u = rng.uniform
    kl = int(kl)
    scl = max(kl - 1, 0)
    osteos = []
    lo, hi = _OSTEO_SIZE[kl]
    for margin, medial in ((0, False), (8, True), (9, False), (15, True)):
        p = _OSTEO_PROB[kl] * (1.0 if medial else 0.8)
        if rng.random() < p:
            size = u(lo, hi) * (1.15 if medial else 0.9)
            osteos.append(Osteophyte(margin, float(size), float(u(15.0, 45.0))))
    return KneeAnatomy(
        shape=s,
        kl=kl,
        tib_shaft_half=wp * u(0.165, 0.2),
        tib_flare_len=wp * u(0.7, 0.9),
        tib_shaft_offset=float(rng.normal(0.0, 1.5)),
        tib_bulge=u(0.3, 2.0),
        tib_cortex_epi=u(0.7, 1.3),
        tib_cortex_shaft=u(3.5, 5.5),
        tib_trabecular=u(0.2, 0.3),
        tib_edge_mm=u(0.6, 1.6),
        tib_plate=u(8.0, 14.0),
        tib_plate_tau=u(0.5, 1.0),
        tib_sclerosis_med=scl * u(0.8, 1.6),
        tib_sclerosis_lat=scl * u(0.1, 0.6),
        tib_rim_offset=u(2.0, 5.0),
        tib_rim_amp=u(0.0, 0.5),
        tib_scar_depth=u(14.0, 24.0),
        tib_wiggle=rng.normal(0.0, 0.3, 8) * _segment_scale(s[:9]),
        fem_shaft_half=wc * u(0.18, 0.215),
        fem_flare_len=wc * u(0.85, 1.05),
        fem_tilt_deg=u(4.0, 8.0),
        fem_bulge=u(1.0, 3.5),
        fem_corner=u(2.0, 5.0),
        fem_edge_mm=u(1.5, 4.0),
        fem_cortex_epi=u(0.7, 1.2),
        fem_cortex_shaft=u(4.0, 6.0),
        fem_trabecular=u(0.2, 0.3),
        fem_plate=u(2.0, 5.0),
        fem_plate_tau=u(0.5, 1.0),
        fem_sclerosis_med=scl * u(0.4, 1.0),
        fem_scar_height=u(18.0, 30.0),
        fem_wiggle=rng.normal(0.0, 0.3, 6) * _segment_scale(s[9:]),
        fem_posterior=u(4.0, 10.0),
        fem_posterior_amp=u(0.0, 2.5),
        scar_amp=u(0.0, 3.0),
        scar_wave=u(0.0, 2.0 * np.pi),
        fib_head_w=u(20.0, 25.0),
        fib_head_h=u(24.0, 30.0),
        fib_head_depth=u(10.0, 13.0),
        fib_drop=u(10.0, 20.0),
        fib_overlap=u(0.0, 0.3),
        fib_shaft_half=u(6.0, 7.5),
        fib_gap=u(7.0, 13.0),
        pat_a=u(20.0, 25.0),
        pat_b=u(22.0, 27.0),
        pat_depth=u(9.0, 12.0),
        pat_du=u(-5.0, 1.0),
        pat_dv=u(12.0, 22.0),
        pat_density=u(0.2, 0.4),
        soft_half=u(50.0, 68.0),
        soft_thigh=u(1.15, 1.45),
        soft_calf=u(0.95, 1.1),
        soft_fat=u(4.0, 15.0),
        soft_depth=u(0.75, 0.95),
        soft_offset=float(rng.normal(3.0, 3.0)),
        tex_amp=u(0.1, 0.2),
        tex_offset=(int(rng.integers(0, 1 << 20)), int(rng.integers(0, 1 << 20))),
        osteophytes=tuple(osteos),
    )


def _segment_scale(points: np.ndarray) -> np.ndarray:
    """Per segment between landmarks: 0 for short segments (< 6 mm), 1 from 12 mm on."""
    return np.clip((np.diff(points[:, 0]) - 6.0) / 6.0, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# profiles


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _chord(d: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
    """Length of a chord of a circle of ``radius`` at distance ``d`` inside its edge (0 outside)."""
    r = np.maximum(radius, 1e-3)
    dd = np.clip(d, 0.0, r)
    return 2.0 * np.sqrt(dd * (2.0 * r - dd))


def _pchip(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch-Carlson): no overshoot between landmarks.

    ``x`` strictly increasing; ``at`` within ``[x[0], x[-1]]``.
    """
    h = np.diff(x)
    delta = np.diff(y) / h
    slope = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            slope[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    # One-sided three-point ends, kept monotone.
    for k, (d0, d1, h0, h1) in ((0, (delta[0], delta[1], h[0], h[1])), (-1, (delta[-1], delta[-2], h[-1], h[-2]))):
        m = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(m) != np.sign(d0):
            m = 0.0
        elif np.sign(d0) != np.sign(d1) and abs(m) > abs(3 * d0):
            m = 3 * d0
        slope[k] = m
    idx = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    t = (at - x[idx]) / h[idx]
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * y[idx]
        + (t3 - 2 * t2 + t) * h[idx] * slope[idx]
        + (-2 * t3 + 3 * t2) * y[idx + 1]
        + (t3 - t2) * h[idx] * slope[idx + 1]
    )


def _edge_curve(
    points: np.ndarray, u: np.ndarray, corner: float, upward: bool, wiggle: np.ndarray | None = None
) -> np.ndarray:
    """The articular outline through ``points`` (PCHIP), continued past both margins by a rounded corner.

    ``upward`` (femur): beyond the margins the outline rises (smaller v); otherwise (tibia) it drops. ``wiggle``
    (mm, one per segment between landmarks) bends each segment by a half sine that vanishes at the landmarks, so
    outlines are less regular than a spline while still passing exactly through every landmark.
    """
    x, y = points[:, 0], points[:, 1]
    uc = np.clip(u.astype(np.float64), x[0], x[-1])
    inside = _pchip(x, y, uc)
    if wiggle is not None:
        seg = np.clip(np.searchsorted(x, uc, side="right") - 1, 0, len(x) - 2)
        inside = inside + wiggle[seg] * np.sin(np.pi * (uc - x[seg]) / (x[seg + 1] - x[seg]))
    sign = -1.0 if upward else 1.0
    left = y[0] + sign * (x[0] - u) ** 2 / (2.0 * corner)
    right = y[-1] + sign * (u - x[-1]) ** 2 / (2.0 * corner)
    out = np.where(u < x[0], left, np.where(u > x[-1], right, inside))
    return out.astype(np.float32)


def _flare(x: np.ndarray) -> np.ndarray:
    """Metaphyseal flare, 0 at the articular margin and 1 in the shaft: the epiphysis keeps its width for a while,
    then narrows fast and merges smoothly into the shaft (a concave, trumpet-like outline)."""
    y = _smoothstep((x - 0.05) / 0.95)
    return 1.0 - (1.0 - y) ** 2


def _bulge(t: np.ndarray) -> np.ndarray:
    """0 at a margin, rising to 1 within a few mm: the condyle edge swells just past the articular margin."""
    return 1.0 - np.exp(-np.maximum(t, 0.0) / 3.0)


def _shaft_sides(
    margin_u: tuple[float, float],
    past_margin: tuple[np.ndarray, np.ndarray],
    length: float,
    bulge: float,
    centre: np.ndarray | float,
    shaft_half: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Lateral and medial outline (u per row) of a long bone from its articular margins into the shaft.

    ``margin_u``: u of the lateral and medial margin landmarks; ``past_margin``: per row, the distance beyond each
    margin towards the shaft (negative on the joint side, where the outline stays at the margin). The edge swells by
    ``bulge`` just past the margin, then flares over ``length`` into a shaft of half-width ``shaft_half`` around
    ``centre``. Tibia and femur share this shape.
    """
    (u0, u1), (d_lat, d_med) = margin_u, past_margin
    ramp_l, ramp_m = _flare(d_lat / length), _flare(d_med / length)
    u_lat = np.where(d_lat < 0, u0, (u0 - bulge * _bulge(d_lat)) * (1 - ramp_l) + (centre - shaft_half) * ramp_l)
    u_med = np.where(d_med < 0, u1, (u1 + bulge * _bulge(d_med)) * (1 - ramp_m) + (centre + shaft_half) * ramp_m)
    return u_lat, u_med


def _ellipsoid_path(
    uu: np.ndarray, vv: np.ndarray, centre: tuple[float, float], a: float, b: float, depth: float, angle_deg: float
) -> np.ndarray:
    """Path length through an ellipsoid (semi-axes ``a`` along its rotated u axis, ``b``, ``depth`` along the beam)."""
    t = np.deg2rad(angle_deg)
    c, s = np.float32(np.cos(t)), np.float32(np.sin(t))
    du, dv = uu - np.float32(centre[0]), vv - np.float32(centre[1])
    x = (c * du + s * dv) / np.float32(a)
    y = (-s * du + c * dv) / np.float32(b)
    q = 1.0 - x * x - y * y
    return np.float32(2.0 * depth) * np.sqrt(np.maximum(q, 0.0))


def _shelled_ellipsoid(
    uu: np.ndarray,
    vv: np.ndarray,
    centre: tuple[float, float],
    a: float,
    b: float,
    depth: float,
    angle_deg: float,
    shell: float,
    inner_density: float,
) -> np.ndarray:
    """Cortical-bone-equivalent path through an ellipsoidal bone with a cortical shell ``shell`` mm thick."""
    outer = _ellipsoid_path(uu, vv, centre, a, b, depth, angle_deg)
    inner = _ellipsoid_path(uu, vv, centre, a - shell, b - shell, depth - shell, angle_deg)
    return (outer - inner) + np.float32(inner_density) * inner


# ---------------------------------------------------------------------------------------------------------------
# rendering


def render_knee(anatomy: KneeAnatomy, canvas: KneeCanvas, medial_limit: float = np.inf) -> np.ndarray:
    """Log-attenuation (float32, ``canvas.rows`` x ``canvas.cols``) of one knee: soft tissue plus bones.

    ``medial_limit`` (mm, knee frame) is where the other leg begins: the soft tissue stops there, as two legs pressed
    together do.
    """
    bone = np.zeros((canvas.rows, canvas.cols), dtype=np.float32)
    tex = texture_window(canvas.rows, canvas.cols, anatomy.tex_offset)
    _add_tibia(bone, tex, anatomy, canvas)
    _add_femur(bone, tex, anatomy, canvas)
    _add_fibula(bone, tex, anatomy, canvas)
    _add_patella(bone, tex, anatomy, canvas)
    if anatomy.implant:
        _add_implant(bone, anatomy, canvas)
    else:
        _add_osteophytes(bone, anatomy, canvas)
    att = _soft_tissue(anatomy, canvas, medial_limit)
    att += np.float32(MU_BONE) * bone
    return att


def _window(canvas: KneeCanvas, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """Knee-frame coordinates (column vector v, row vector u) of a sub-window."""
    return canvas.v[rows][:, None], canvas.u[cols][None, :]


def _add_tibia(bone: np.ndarray, tex: np.ndarray, an: KneeAnatomy, canvas: KneeCanvas) -> None:
    t = an.shape[:9]
    t0, t8 = t[0].tolist(), t[8].tolist()  # Python floats keep the float32 arrays float32
    rows = canvas.row_range(float(t[:, 1].min()) - 1.0, np.inf)
    if rows.stop <= rows.start:
        return
    v = canvas.v[rows]
    centre = 0.5 * (t0[0] + t8[0]) + an.tib_shaft_offset
    length = an.tib_flare_len
    u_lat, u_med = _shaft_sides((t0[0], t8[0]), (v - t0[1], v - t8[1]), length, an.tib_bulge, centre, an.tib_shaft_half)
    cols = canvas.col_range(float(u_lat.min()) - 1.0, float(u_med.max()) + 1.0)
    vv, uu = _window(canvas, rows, cols)
    u_lat, u_med = u_lat.astype(np.float32)[:, None], u_med.astype(np.float32)[:, None]
    plateau = _edge_curve(t, canvas.u[cols], corner=3.0, upward=False, wiggle=an.tib_wiggle)[None, :]
    dtop = vv - plateau
    dx = np.minimum(uu - u_lat, u_med - uu)
    radius = 0.5 * (u_med - u_lat)
    # 0 at the joint, 1 in the shaft: cortex thickens, trabecular bone gives way to marrow, section becomes round.
    shaft = _smoothstep((vv - float(t[:, 1].mean()) - 0.25 * length) / (1.1 * length)).astype(np.float32)
    cortex = an.tib_cortex_epi + (an.tib_cortex_shaft - an.tib_cortex_epi) * shaft
    depth = 0.62 + 0.33 * shaft
    outer = _chord(dx, radius)
    inner = _chord(dx - cortex, radius - cortex)
    trab = an.tib_trabecular * (1.0 - shaft) + 0.03 * shaft
    texture = 1.0 + an.tex_amp * tex[rows, cols] * (1.0 - 0.8 * shaft)
    edge = np.sqrt(np.clip(dtop / an.tib_edge_mm, 0.0, 1.0))
    body = depth * edge * ((outer - inner) + trab * inner * texture)
    # Subchondral plate seen edge-on, thicker and denser medially (+u) with OA; a faint second (posterior) rim.
    medial = _smoothstep(uu / 12.0 + 0.5)
    sclerosis = an.tib_sclerosis_lat * (1 - medial) + an.tib_sclerosis_med * medial
    tau = an.tib_plate_tau + 1.2 * sclerosis
    amp = an.tib_plate * (1.0 + 0.35 * sclerosis)
    within = _smoothstep((uu - t0[0]) / 4.0) * _smoothstep((t8[0] - uu) / 4.0)
    d = np.maximum(dtop, 0.0)
    plate = amp * within * np.exp(-d / tau) * (1.0 + 0.15 * tex[rows, cols])
    rim = an.tib_rim_amp * amp * within * np.exp(-(((d - an.tib_rim_offset) / 0.7) ** 2))
    inside = (dx >= 0) & (dtop >= 0)
    if an.implant:  # resected flat below the plateau for the tibial tray
        inside &= vv >= float(t[[0, 8], 1].mean()) + _TIBIAL_CUT_MM
    scar = _physeal_scar(uu, vv, dx, float(t[:, 1].mean()) + an.tib_scar_depth, an)
    bone[rows, cols] += np.where(inside, body + edge * (plate + rim) + scar, 0.0).astype(np.float32)


def _add_femur(bone: np.ndarray, tex: np.ndarray, an: KneeAnatomy, canvas: KneeCanvas) -> None:
    f = an.shape[9:]
    f9, f15 = f[0].tolist(), f[-1].tolist()
    rows = canvas.row_range(-np.inf, float(f[:, 1].max()) + 1.0)
    if rows.stop <= rows.start:
        return
    v = canvas.v[rows]
    length = an.fem_flare_len
    above = np.maximum(float(f[:, 1].mean()) - v, 0.0)
    centre = 0.5 * (f9[0] + f15[0]) - np.tan(np.deg2rad(an.fem_tilt_deg)) * np.maximum(above - 0.5 * length, 0.0)
    u_lat, u_med = _shaft_sides(
        (f9[0], f15[0]), (f9[1] - v, f15[1] - v), length, an.fem_bulge, centre, an.fem_shaft_half
    )
    cols = canvas.col_range(float(u_lat.min()) - 1.0, float(u_med.max()) + 1.0)
    vv, uu = _window(canvas, rows, cols)
    u_lat, u_med = u_lat.astype(np.float32)[:, None], u_med.astype(np.float32)[:, None]
    condyles = _edge_curve(f, canvas.u[cols], corner=an.fem_corner, upward=True, wiggle=an.fem_wiggle)[None, :]
    dbot = condyles - vv
    dx = np.minimum(uu - u_lat, u_med - uu)
    radius = 0.5 * (u_med - u_lat)
    shaft = _smoothstep((above[:, None] - 0.3 * length) / (1.0 * length)).astype(np.float32)
    cortex = an.fem_cortex_epi + (an.fem_cortex_shaft - an.fem_cortex_epi) * shaft
    depth = 0.8 + 0.2 * shaft
    outer = _chord(dx, radius)
    inner = _chord(dx - cortex, radius - cortex)
    trab = an.fem_trabecular * (1.0 - shaft) + 0.03 * shaft
    texture = 1.0 + an.tex_amp * tex[rows, cols] * (1.0 - 0.8 * shaft)
    edge = np.sqrt(np.clip(dbot / an.fem_edge_mm, 0.0, 1.0))
    body = depth * edge * ((outer - inner) + trab * inner * texture)
    medial = _smoothstep(uu / 12.0 + 0.5)
    tau = an.fem_plate_tau + 1.0 * an.fem_sclerosis_med * medial
    within = _smoothstep((uu - f9[0]) / 4.0) * _smoothstep((f15[0] - uu) / 4.0)
    plate = an.fem_plate * (1.0 + 0.3 * an.fem_sclerosis_med * medial) * within * np.exp(-np.maximum(dbot, 0.0) / tau)
    inside = (dx >= 0) & (dbot >= 0)
    # Posterior condyle outlines seen through the epiphysis: faint arcs above each condyle's distal outline.
    fx = f[:, 0].tolist()
    condylar = _smoothstep((uu - fx[0]) / 3.0) * _smoothstep((fx[2] - uu) / 3.0) + _smoothstep(
        (uu - fx[4]) / 3.0
    ) * _smoothstep((fx[6] - uu) / 3.0)
    arcs = an.fem_posterior_amp * condylar * np.exp(-(((dbot - an.fem_posterior) / 0.5) ** 2))
    scar = _physeal_scar(uu, vv, dx, float(f[:, 1].mean()) - an.fem_scar_height, an) + arcs
    bone[rows, cols] += np.where(inside, body + edge * plate + scar, 0.0).astype(np.float32)


def _physeal_scar(uu: np.ndarray, vv: np.ndarray, dx: np.ndarray, level: float, an: KneeAnatomy) -> np.ndarray:
    """The closed growth plate: a faint, slightly wavy sclerotic line across the bone, fading towards the cortex."""
    wave = level + 1.5 * np.sin(uu / 9.0 + an.scar_wave) + 0.8 * np.sin(uu / 3.7 + 2.0 * an.scar_wave)
    line = np.exp(-(((vv - wave) / 0.6) ** 2))
    return an.scar_amp * line * _smoothstep(dx / 6.0)


def _tibia_lateral_edge(an: KneeAnatomy, v: float) -> float:
    t0, t8 = an.shape[0], an.shape[8]
    centre = 0.5 * (t0[0] + t8[0]) + an.tib_shaft_offset
    tl = v - t0[1]
    ramp = float(_flare(np.asarray(tl / an.tib_flare_len)))
    return float((t0[0] - an.tib_bulge * _bulge(np.asarray(tl))) * (1 - ramp) + (centre - an.tib_shaft_half) * ramp)


def _add_fibula(bone: np.ndarray, tex: np.ndarray, an: KneeAnatomy, canvas: KneeCanvas) -> None:
    """Fibular head (a leaning ellipsoid with its apex, partly behind the lateral tibia), neck, and shaft."""
    top = float(an.shape[0][1]) + an.fib_drop
    hc_v = top + 0.5 * an.fib_head_h
    hc_u = _tibia_lateral_edge(an, hc_v) + an.fib_overlap * an.fib_head_w
    shaft_u = hc_u - 0.1 * an.fib_head_w
    rows = canvas.row_range(top - 1.0, np.inf)
    cols = canvas.col_range(hc_u - 0.5 * an.fib_head_w - 3.0, hc_u + 0.5 * an.fib_head_w + 3.0)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return
    vv, uu = _window(canvas, rows, cols)
    # The head leans laterally (its long axis ~20 deg off vertical) and carries the styloid apex on top.
    head = _shelled_ellipsoid(
        uu, vv, (hc_u, hc_v), 0.5 * an.fib_head_h, 0.5 * an.fib_head_w, an.fib_head_depth, 70.0, 0.8, 0.35
    )
    apex = (hc_u - 0.22 * an.fib_head_w, hc_v - 0.42 * an.fib_head_h)
    head = np.maximum(head, _shelled_ellipsoid(uu, vv, apex, 3.0, 5.0, 0.5 * an.fib_head_depth, 25.0, 0.3, 0.6))
    # Neck and shaft: a tube narrowing below the head, its axis drifting slightly laterally.
    below = np.maximum(vv - hc_v, 0.0)
    axis = hc_u + (shaft_u - hc_u) * _smoothstep(below / 60.0)
    half = an.fib_shaft_half + (0.42 * an.fib_head_w - an.fib_shaft_half) * np.exp(-below / 10.0)
    dx = half - np.abs(uu - axis)
    outer = _chord(dx, half)
    inner = _chord(dx - 1.8, half - 1.8)
    tube = np.where(vv > hc_v, (outer - inner) + 0.12 * inner, 0.0)
    bone[rows, cols] += np.maximum(head, tube).astype(np.float32) * (1.0 + 0.5 * an.tex_amp * tex[rows, cols])


def _add_patella(bone: np.ndarray, tex: np.ndarray, an: KneeAnatomy, canvas: KneeCanvas) -> None:
    f12 = an.shape[12].tolist()
    centre = (f12[0] + an.pat_du, f12[1] - an.pat_dv)
    rows = canvas.row_range(centre[1] - an.pat_b - 1.0, centre[1] + an.pat_b + 1.0)
    cols = canvas.col_range(centre[0] - an.pat_a - 1.0, centre[0] + an.pat_a + 1.0)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return
    vv, uu = _window(canvas, rows, cols)
    pat = _shelled_ellipsoid(uu, vv, centre, an.pat_a, an.pat_b, an.pat_depth, 0.0, 0.8, 0.5)
    texture = 1.0 + 0.5 * an.tex_amp * tex[rows, cols]
    bone[rows, cols] += (an.pat_density * pat * texture).astype(np.float32)


_TIBIAL_CUT_MM = 9.0
"""Bone resected below the plateau outline for a tibial tray (the polyethylene insert above is radiolucent)."""
_METAL = 250.0
"""Cortical-bone-equivalent path of a metal component: far beyond the detector's range, so it saturates."""


def _add_implant(bone: np.ndarray, an: KneeAnatomy, canvas: KneeCanvas) -> None:
    """Total knee replacement: a femoral component over the condyles and a tibial tray with a stem."""
    f, t = an.shape[9:], an.shape[:9]
    rows = canvas.row_range(float(f[:, 1].min()) - 30.0, float(t[:, 1].max()) + 60.0)
    cols = canvas.col_range(float(min(f[0, 0], t[0, 0])) - 3.0, float(max(f[-1, 0], t[-1, 0])) + 3.0)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return
    vv, uu = _window(canvas, rows, cols)
    u = canvas.u[cols]
    condyles = _edge_curve(f, u, corner=an.fem_corner, upward=True)[None, :]
    # Femoral component: a shell following the condylar outline, thicker at the box cut in the middle.
    dbot = condyles - vv
    fem_span = (uu >= f[0, 0] - 1.0) & (uu <= f[-1, 0] + 1.0)
    shell = fem_span & (dbot >= 0.0) & (dbot <= 7.0 + 3.0 * np.exp(-(((uu - float(f[3, 0])) / 12.0) ** 2)))
    # Tibial tray: a plate just below the resection, and a stem down the middle.
    top = float(t[[0, 8], 1].mean()) + _TIBIAL_CUT_MM
    tray = (vv >= top) & (vv <= top + 4.0) & (uu >= t[0, 0] + 1.5) & (uu <= t[-1, 0] - 1.5)
    stem = (vv >= top) & (vv <= top + 45.0) & (np.abs(uu - t[4, 0]) <= 5.0 - 0.05 * np.maximum(vv - top, 0.0))
    bone[rows, cols] += np.where(shell | tray | stem, np.float32(_METAL), np.float32(0.0))


def _add_osteophytes(bone: np.ndarray, an: KneeAnatomy, canvas: KneeCanvas) -> None:
    """Marginal spurs: lips continuing the articular margin outwards, just on the bone side of the landmark."""
    for spur in an.osteophytes:
        p = an.shape[spur.margin].tolist()
        lateral = spur.margin in (0, 9)
        tibial = spur.margin in (0, 8)
        out = -1.0 if lateral else 1.0  # outward along u
        into_bone = 1.0 if tibial else -1.0  # tibia lies below its margin (+v), femur above (-v)
        length, thick = 0.5 * spur.size, max(0.32 * spur.size, 0.5)
        # Tilt the lip towards the joint (tibial lips rise, femoral lips drop) by angle_deg / 2.
        tilt = 0.5 * spur.angle_deg * (-into_bone) * out
        centre = (p[0] + out * 0.5 * length, p[1] + into_bone * (thick + 0.3))
        reach = length + thick + 2.0
        rows = canvas.row_range(centre[1] - reach, centre[1] + reach)
        cols = canvas.col_range(centre[0] - reach, centre[0] + reach)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            continue
        vv, uu = _window(canvas, rows, cols)
        path = _shelled_ellipsoid(uu, vv, centre, length, thick, 0.9 * spur.size + 1.0, tilt, 0.3, 0.5)
        bone[rows, cols] += path.astype(np.float32)


def _soft_tissue(an: KneeAnatomy, canvas: KneeCanvas, medial_limit: float) -> np.ndarray:
    """Fat + muscle envelope of the leg: thigh above, knee, calf below; cut where the other leg begins."""
    v = canvas.v
    t = an.shape[:9]
    knee_v = float(t[:, 1].mean())
    dv = v - knee_v
    thigh = 1.0 + (an.soft_thigh - 1.0) * _smoothstep(-dv / 160.0)
    calf_rise = 1.0 + (an.soft_calf - 1.0) * _smoothstep(dv / 90.0)
    calf_fall = 1.0 - 0.25 * _smoothstep((dv - 120.0) / 200.0)
    # Muscle bellies: a gentle random undulation of the outline along the leg.
    bellies = 1.0 + 0.03 * np.sin(dv / 37.0 + an.scar_wave) + 0.02 * np.sin(dv / 17.0 + 2.3 * an.scar_wave)
    half = an.soft_half * thigh * calf_rise * calf_fall * bellies
    centre = an.soft_offset - np.tan(np.deg2rad(an.fem_tilt_deg)) * np.maximum(-dv - 40.0, 0.0) * 0.6
    med_half = np.minimum(half, np.maximum(medial_limit - centre - 0.5, 0.0))
    out = np.zeros((canvas.rows, canvas.cols), dtype=np.float32)
    cols = canvas.col_range(float((centre - half).min()) - 1.0, float((centre + med_half).max()) + 1.0)
    if cols.stop <= cols.start:
        return out
    uu = canvas.u[cols][None, :]
    x = uu - centre.astype(np.float32)[:, None]
    a = np.where(x > 0, med_half.astype(np.float32)[:, None], half.astype(np.float32)[:, None])
    muscle_a = np.maximum(a - np.float32(an.soft_fat), np.float32(1.0))
    x *= x
    outer = np.sqrt(np.maximum(a * a - x, np.float32(0.0)))
    inner = np.sqrt(np.maximum(muscle_a * muscle_a - x, np.float32(0.0)))
    scale = 2.0 * an.soft_depth
    out[:, cols] = np.float32(MU_FAT * scale) * outer + np.float32((MU_SOFT - MU_FAT) * scale) * inner
    return out
