"""Per-patient chest geometry in normalised image coordinates.

Everything is expressed on the square [-1, 1] x [-1, 1] (x to the image right, y down),
so one patient is drawn identically at 64 or 512 px and only the pixel grid changes.
A patient keeps the same anatomy across follow-up studies; positioning and exposure
vary per image (:class:`Acquisition`), as they do between real exposures.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    heart_height: float = 0.25      # vertical semi-axis of the cardiac silhouette
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
    vessel_density: float = 0.09
    female: bool = False
    texture_seed: int = 0

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


def sample_anatomy(rng: np.random.Generator, variation: float = 1.0, female: bool | None = None) -> Anatomy:
    """Draw one patient's anatomy; ``variation`` scales every spread (0 = template patient)."""
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
        heart_height=0.25 + n(0.02),
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
        vessel_density=0.09 + n(0.012),
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


__all__ = ["Anatomy", "Acquisition", "sample_anatomy", "sample_acquisition"]
