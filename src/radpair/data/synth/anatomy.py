"""Per-patient chest geometry in normalised image coordinates.

Everything is expressed on the square [-1, 1] x [-1, 1] (x to the image right, y down),
so one patient is drawn identically at 64 or 512 px and only the pixel grid changes.
A patient keeps the same anatomy across follow-up studies; positioning and exposure
vary per image (:class:`Acquisition`), as they do between real exposures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Anatomy:
    """Shape parameters of one patient's chest (normalised units, 1 unit ~ 150 mm)."""

    lung_center: float = 0.40       # distance of each lung's centre from the midline
    lung_half_width: float = 0.34   # lateral lung edge at lung_center + lung_half_width
    lung_top: float = -0.74         # apex height
    lung_center_y: float = -0.04
    dome_right: float = 0.30        # apex of the right hemidiaphragm (y, lower = higher)
    dome_left: float = 0.36
    cp_depth: float = 0.26          # how far the lateral costophrenic recess falls below the dome
    mediastinum_half_width: float = 0.11
    aortic_knob: float = 0.065
    heart_center_x: float = 0.07
    heart_height: float = 0.27      # vertical semi-axis of the cardiac silhouette
    heart_tilt: float = 0.35        # radians; apex points to the patient's left
    heart_bulge: float = 0.0        # asymmetry of the left heart border
    hilum_right: tuple[float, float] = (-0.2, -0.05)
    hilum_left: tuple[float, float] = (0.19, -0.1)
    body_half_width: float = 0.9
    soft_tissue: float = 0.55       # density of soft tissue (brightness before windowing)
    lung_air: float = 0.37          # density removed by aerated lung
    rib_spacing: float = 0.155
    rib_phase: float = 0.0
    rib_curve: float = 0.32
    rib_density: float = 0.07
    clavicle_y: float = -0.63
    clavicle_tilt: float = 0.1
    vessel_count: int = 9
    vessel_density: float = 0.085
    female: bool = False
    texture_seed: int = 0
    scale: float = 1.0              # size of the whole patient on the film (SynthConfig.body_scale)
    heart_scale: float = 1.0        # drawn heart width relative to its CTR (SynthConfig.heart_scale)

    @property
    def thorax_width(self) -> float:
        """Widest inner thoracic diameter: the denominator of the cardiothoracic ratio."""
        return 2.0 * (self.lung_center + self.lung_half_width)

    def dome(self, side: str) -> float:
        return self.dome_right if side == "right" else self.dome_left

    def hilum(self, side: str) -> tuple[float, float]:
        return self.hilum_right if side == "right" else self.hilum_left


@dataclass(frozen=True)
class Acquisition:
    """How one exposure was taken: positioning and exposure, drawn per image."""

    dx: float = 0.0
    dy: float = 0.0
    rotation: float = 0.0       # radians
    scale: float = 1.0
    brightness: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    inspiration: float = 0.0    # + = deeper breath (domes lower)


def sample_anatomy(rng: np.random.Generator, variation: float = 1.0, female: bool | None = None, *,
                   body_scale: float = 1.0, chest_aspect: float = 1.0, heart_scale: float = 1.0) -> Anatomy:
    """Draw one patient's anatomy; ``variation`` scales every spread (0 = template patient).

    ``body_scale``, ``chest_aspect`` and ``heart_scale`` (see :class:`SynthConfig`) reshape
    the drawn patient with :func:`reshape_anatomy` and draw no random numbers, so the same
    ``rng`` gives the same patient, only smaller or rounder.
    """
    an = _sample_anatomy(rng, variation, female)
    if body_scale != 1.0 or chest_aspect != 1.0 or heart_scale != 1.0:
        an = reshape_anatomy(an, body_scale, chest_aspect, heart_scale)
    return an


# lung heights are stretched about the level of the hila
_PIVOT_Y = -0.08


def reshape_anatomy(an: Anatomy, body_scale: float = 1.0, chest_aspect: float = 1.0,
                    heart_scale: float = 1.0) -> Anatomy:
    """Another population's chest: smaller (``body_scale``), rounder (``chest_aspect`` > 1:
    widths times it, lung heights about the hilar level divided by it) and with a relatively
    larger heart and mediastinum (``heart_scale``)."""
    a, h = float(chest_aspect), float(heart_scale)

    def tall(y: float) -> float:
        return _PIVOT_Y + (y - _PIVOT_Y) / a

    return replace(
        an,
        lung_center=an.lung_center * a,
        lung_half_width=an.lung_half_width * a,
        lung_top=tall(an.lung_top),
        lung_center_y=tall(an.lung_center_y),
        dome_right=tall(an.dome_right),
        dome_left=tall(an.dome_left),
        cp_depth=an.cp_depth / a,
        mediastinum_half_width=an.mediastinum_half_width * a * h,
        heart_center_x=an.heart_center_x * a,
        heart_height=an.heart_height * h,
        hilum_right=(an.hilum_right[0] * a, tall(an.hilum_right[1])),
        hilum_left=(an.hilum_left[0] * a, tall(an.hilum_left[1])),
        body_half_width=an.body_half_width * a,
        rib_spacing=an.rib_spacing / a,
        clavicle_y=tall(an.clavicle_y),
        scale=an.scale * float(body_scale),
        heart_scale=an.heart_scale * h,
    )


def _sample_anatomy(rng: np.random.Generator, variation: float, female: bool | None) -> Anatomy:
    v = float(variation)

    def n(sd: float, lo: float = -2.5, hi: float = 2.5) -> float:
        return float(np.clip(rng.standard_normal(), lo, hi) * sd * v)

    fem = bool(rng.random() < 0.48) if female is None else bool(female)
    size = n(0.035)
    lung_half = 0.34 + size * 0.6 - (0.015 if fem else 0.0)
    lung_c = 0.40 + size * 0.4 - (0.01 if fem else 0.0)
    top = -0.74 + n(0.03)
    dome_r = 0.30 + n(0.045)
    dome_l = dome_r + 0.05 + n(0.02)
    ml = 0.11 + n(0.012)
    return Anatomy(
        lung_center=lung_c,
        lung_half_width=lung_half,
        lung_top=top,
        lung_center_y=-0.04 + n(0.02),
        dome_right=dome_r,
        dome_left=dome_l,
        cp_depth=0.26 + n(0.03),
        mediastinum_half_width=ml,
        aortic_knob=0.065 + n(0.012),
        heart_center_x=0.07 + n(0.02),
        heart_height=0.27 + n(0.02),
        heart_tilt=0.35 + n(0.08),
        heart_bulge=n(0.4),
        hilum_right=(-0.2 + n(0.015), -0.05 + n(0.03)),
        hilum_left=(0.19 + n(0.015), -0.1 + n(0.03)),
        body_half_width=0.9 + n(0.04) + (0.02 if fem else 0.0),
        soft_tissue=0.55 + n(0.03),
        lung_air=0.37 + n(0.03),
        rib_spacing=0.155 + n(0.01),
        rib_phase=float(rng.random()),
        rib_curve=0.32 + n(0.05),
        rib_density=0.07 + n(0.012),
        clavicle_y=-0.63 + n(0.03),
        clavicle_tilt=0.1 + n(0.04),
        vessel_count=int(rng.integers(8, 12)),
        vessel_density=0.085 + n(0.012),
        female=fem,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_acquisition(rng: np.random.Generator, view: str, variation: float = 1.0) -> Acquisition:
    """Draw positioning and exposure of one image; portable AP films vary more."""
    v = float(variation)
    ap = 1.6 if view == "AP" else 1.0

    def n(sd: float) -> float:
        return float(np.clip(rng.standard_normal(), -2.5, 2.5) * sd * v)

    return Acquisition(
        dx=n(0.03 * ap),
        dy=n(0.03 * ap),
        rotation=n(0.035 * ap),
        scale=1.0 + n(0.035),
        brightness=n(0.05),
        contrast=1.0 + n(0.12),
        gamma=float(np.exp(n(0.15))),
        inspiration=n(0.03) - (0.05 if view == "AP" else 0.0),
    )


@dataclass(frozen=True)
class VesselTree:
    """Pulmonary vessels of one lung as straight segments (patient coordinates).

    ``upper`` marks segments above the hilum: their prominence relative to the lower
    zone is what cephalization (edema grade 1) changes.
    """

    p0: np.ndarray
    p1: np.ndarray
    width: np.ndarray
    upper: np.ndarray


def _inside_lung(an: Anatomy, xs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether mirrored points (xs lateral-positive, y) lie inside the lung outline."""
    top, bottom = an.lung_top, an.dome_right + 0.35
    yc, hb = 0.5 * (top + bottom), 0.5 * (bottom - top)
    v = (y - yc) / hb
    u = (xs - an.lung_center + 0.09 * np.clip(-v, 0.0, 1.0)) / an.lung_half_width
    upper = u * u + v * v < 0.92
    lower = (u**4 + v**4 < 0.9) & (y < an.dome_right + 0.08)
    return np.where(v < 0, upper, lower) & (xs > 0.05)


@lru_cache(maxsize=512)
def vessel_tree(an: Anatomy, side: str) -> VesselTree:
    """Grow a branching vessel tree from the hilum, fixed per patient by its texture seed.

    Vessels branch dichotomously, taper and shorten, and stop at the lung edge, so the
    outer third of the lung has few visible markings, as on a real film. Grown one
    generation at a time over all branches at once (vectorised).
    """
    rng = np.random.default_rng([an.texture_seed, 1 if side == "right" else 2])
    s = -1.0 if side == "right" else 1.0
    hx, hy = an.hilum(side)
    n = 7
    x = np.full(n, abs(hx))
    y = np.full(n, hy)
    ang = np.linspace(-1.9, 1.75, n) + rng.uniform(-0.15, 0.15, n)
    w = 0.021 * rng.uniform(0.85, 1.15, n)
    ln = 0.13 * rng.uniform(0.85, 1.15, n)
    out = []
    for depth in range(7):
        alive = np.ones(len(x), dtype=bool)
        for _ in range(2):  # each branch is two half segments with a small kink
            ang = ang + rng.normal(0.0, 0.12, len(x))
            x2 = x + 0.5 * ln * np.cos(ang)
            y2 = y + 0.5 * ln * np.sin(ang)
            alive &= _inside_lung(an, x2, y2)
            out.append(np.stack([x[alive], y[alive], x2[alive], y2[alive], w[alive]], axis=1))
            x, y = x2, y2
        keep = alive & (w * 0.72 > 0.0042)
        if depth == 6 or not keep.any():
            break
        x, y, ang, w, ln = x[keep], y[keep], ang[keep], w[keep], ln[keep]
        m = len(x)
        da = rng.uniform(0.25, 0.6, (2, m)) * np.array([[-1.0], [1.0]])
        x = np.concatenate([x, x])
        y = np.concatenate([y, y])
        ang = np.concatenate([ang + da[0], ang + da[1]])
        w = np.concatenate([w, w]) * rng.uniform(0.66, 0.78, 2 * m)
        ln = np.concatenate([ln, ln]) * rng.uniform(0.66, 0.84, 2 * m)
    arr = np.concatenate(out, axis=0)
    p0 = np.stack([s * arr[:, 0], arr[:, 1]], axis=1)
    p1 = np.stack([s * arr[:, 2], arr[:, 3]], axis=1)
    return VesselTree(p0, p1, arr[:, 4].copy(), arr[:, 3] < hy - 0.03)


N_VESSEL_TEMPLATES = 48
_TEMPLATE = Anatomy()


def vessel_template(index: int, side: str) -> VesselTree:
    """One of a fixed bank of vessel trees grown on the template anatomy.

    Growing a tree costs milliseconds; patients reuse a bank tree chosen by their texture
    seed and stretched to their own lungs (see :func:`fit_vessel_points`), which keeps
    patients distinct while the per-image cost stays an affine map.
    """
    return vessel_tree(replace(_TEMPLATE, texture_seed=int(index) % N_VESSEL_TEMPLATES), side)


def template_index(an: Anatomy, side: str) -> int:
    return (an.texture_seed + (0 if side == "right" else 7919)) % N_VESSEL_TEMPLATES


def fit_vessel_points(pts: np.ndarray, an: Anatomy, side: str) -> np.ndarray:
    """Map template-anatomy points of one lung onto patient ``an`` (hilum-anchored stretch)."""
    t, p = _TEMPLATE, an
    thx, thy = t.hilum(side)
    phx, phy = p.hilum(side)
    sx = p.lung_half_width / t.lung_half_width
    sy_up = (phy - p.lung_top) / (thy - t.lung_top)
    sy_dn = (p.dome(side) - phy) / (t.dome(side) - thy)
    out = np.empty_like(pts)
    out[:, 0] = phx + (pts[:, 0] - thx) * sx
    dy = pts[:, 1] - thy
    out[:, 1] = phy + dy * np.where(dy < 0, sy_up, sy_dn)
    return out


__all__ = ["Anatomy", "Acquisition", "VesselTree", "sample_anatomy", "reshape_anatomy", "sample_acquisition",
           "vessel_tree", "vessel_template", "template_index", "fit_vessel_points", "N_VESSEL_TEMPLATES"]
