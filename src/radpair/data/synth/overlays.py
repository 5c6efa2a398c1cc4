"""Things on the film that are not the patient's disease: devices, leads, markers, text.

Support devices (tubes, lines, pacemakers, chest tubes) are ground truth: sicker
patients have them, reports describe them, and a model can latch onto them as a shortcut
for "sick", as happens with real ICU films. ECG leads and oxygen tubing are not in the
report; how often they appear scales with ``SynthConfig.distractor_rate``, and whether
that rate depends on illness is ``SynthConfig.distractor_illness_link`` (0 by default:
pure distractors; 1: several times as frequent on sick studies, a realistic shortcut).
L/R markers and burned-in text depend only on the view (AP films say "PORTABLE", so
they travel with the view, which travels with illness).

Device geometry is in patient coordinates (it moves with the patient); markers and text
are in image coordinates (they are burned onto the detector).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage

from radpair.data.synth.anatomy import Anatomy
from radpair.data.synth.raster import F32, Frame, catmull_rom, ring_segments

# 5x7 bitmap font for burned-in annotations; deterministic and dependency-free.
_FONT_ROWS = {
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "B": ["11110", "10001", "10001", "11110", "10001", "10001", "11110"],
    "C": ["01110", "10001", "10000", "10000", "10000", "10001", "01110"],
    "D": ["11100", "10010", "10001", "10001", "10001", "10010", "11100"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "F": ["11111", "10000", "10000", "11110", "10000", "10000", "10000"],
    "G": ["01110", "10001", "10000", "10111", "10001", "10001", "01111"],
    "H": ["10001", "10001", "10001", "11111", "10001", "10001", "10001"],
    "I": ["01110", "00100", "00100", "00100", "00100", "00100", "01110"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "M": ["10001", "11011", "10101", "10101", "10001", "10001", "10001"],
    "N": ["10001", "10001", "11001", "10101", "10011", "10001", "10001"],
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "S": ["01111", "10000", "10000", "01110", "00001", "00001", "11110"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
    "V": ["10001", "10001", "10001", "10001", "10001", "01010", "00100"],
    "X": ["10001", "10001", "01010", "00100", "01010", "10001", "10001"],
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11111", "00010", "00100", "00010", "00001", "10001", "01110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
    ":": ["00000", "01100", "01100", "00000", "01100", "01100", "00000"],
    "/": ["00001", "00010", "00010", "00100", "01000", "01000", "10000"],
    " ": ["00000"] * 7,
}
FONT = {ch: np.array([[c == "1" for c in row] for row in rows], dtype=F32) for ch, rows in _FONT_ROWS.items()}


def text_bitmap(text: str) -> np.ndarray:
    """A (7, 6*len) float bitmap of ``text`` (unknown characters become blanks)."""
    blank = FONT[" "]
    glyphs = []
    for ch in text.upper():
        glyphs.append(FONT.get(ch, blank))
        glyphs.append(np.zeros((7, 1), dtype=F32))
    return np.hstack(glyphs[:-1]) if glyphs else np.zeros((7, 1), dtype=F32)


@lru_cache(maxsize=256)
def _text_patch(text: str, h_px: int, boxed: bool) -> np.ndarray:
    bm = text_bitmap(text)
    if boxed:
        bm = np.pad(bm, 2)
        bm[0, :] = bm[-1, :] = 1.0
        bm[:, 0] = bm[:, -1] = 1.0
    w_px = max(2, int(round(h_px * bm.shape[1] / bm.shape[0])))
    patch = ndimage.zoom(bm, (h_px / bm.shape[0], w_px / bm.shape[1]), order=1, mode="nearest", grid_mode=True)
    patch = patch.clip(0, 1).astype(F32)
    patch.setflags(write=False)
    return patch


def stamp_text(image: np.ndarray, text: str, x: float, y: float, height: float, value: float = 1.0,
               boxed: bool = False) -> None:
    """Burn ``text`` into ``image`` (values 0..1) with its top-left at image coords (x, y).

    The glyphs are resampled to the requested physical height, so the annotation covers
    the same share of the film at every resolution.
    """
    size = image.shape[0]
    h_px = max(2, int(round(height / 2.0 * size)))
    patch = _text_patch(text, h_px, bool(boxed))
    r0 = int(round((y + 1.0) / 2.0 * size))
    c0 = int(round((x + 1.0) / 2.0 * size))
    r1, c1 = min(size, r0 + patch.shape[0]), min(size, c0 + patch.shape[1])
    r0c, c0c = max(0, r0), max(0, c0)
    if r1 <= r0c or c1 <= c0c:
        return
    sub = patch[r0c - r0:r1 - r0, c0c - c0:c1 - c0]
    region = image[r0c:r1, c0c:c1]
    region[...] = region * (1 - sub) + value * sub


# support devices ------------------------------------------------------------------------

def draw_devices(frame: Frame, density: np.ndarray, anat: Anatomy, devices: tuple[str, ...],
                 rng: np.random.Generator, carina_y: float, lateral: bool = False) -> None:
    """Draw the study's support devices; ``rng`` is the study's detail stream, so every
    image of one study shows the same tube positions."""
    for dev in devices:
        if dev == "ett":
            tip = carina_y - 0.07 - 0.08 * rng.random()
            if lateral:
                pts = catmull_rom([(-0.05, -1.1), (0.0, -0.7), (0.06, tip)])
            else:
                pts = catmull_rom([(0.02, -1.1), (0.01, -0.7), (0.0, tip)])
            off = np.array([[0.018, 0.0]])
            frame.polyline(pts - off, 0.28, 0.010)
            frame.polyline(pts + off, 0.28, 0.010)
            frame.polyline(pts + off * 0.6, 0.45, 0.008)  # radiopaque stripe
        elif dev == "ng":
            dl = anat.dome_left
            if lateral:
                ctrl = [(0.28, -1.1), (0.32, -0.5), (0.33, 0.1), (0.2, dl + 0.12), (-0.05, dl + 0.25)]
            else:
                ctrl = [(0.01, -1.1), (0.0, -0.55), (0.04, 0.0), (0.1, dl + 0.06),
                        (0.3 + 0.05 * rng.random(), dl + 0.22), (0.42, dl + 0.18), (0.36, dl + 0.1)]
            frame.polyline(catmull_rom(ctrl), 0.38, 0.012)
        elif dev in ("cvc_rij", "cvc_lsc", "picc"):
            tip_y = -0.28 + 0.1 * rng.random()
            if lateral:
                ctrl = [(0.1, -1.1), (0.02, -0.6), (-0.05, tip_y)]
            elif dev == "cvc_rij":
                ctrl = [(-0.24, -1.1), (-0.15, -0.72), (-0.08, -0.45), (-0.05, tip_y)]
            elif dev == "cvc_lsc":
                ctrl = [(0.78, -0.74), (0.4, -0.64), (0.12, -0.5), (-0.03, -0.38), (-0.05, tip_y)]
            else:
                ctrl = [(-1.1, -0.5), (-0.75, -0.66), (-0.35, -0.62), (-0.1, -0.46), (-0.05, tip_y)]
            frame.polyline(catmull_rom(ctrl), 0.4, 0.010)
        elif dev == "pacemaker":
            bx, by = (-0.55, -0.72) if lateral else (0.56, -0.58)
            box = [(bx - 0.07, by - 0.05), (bx + 0.07, by - 0.05), (bx + 0.07, by + 0.05), (bx - 0.07, by + 0.05)]
            sl, m = frame.polygon(box)
            if sl is not None:
                density[sl] += F32(0.85) * m
            if lateral:
                leads = [[(bx, by), (-0.3, -0.5), (-0.2, 0.0), (-0.3, 0.3)]]
            else:
                leads = [[(bx, by), (0.3, -0.55), (0.0, -0.35), (-0.1, 0.05)],
                         [(bx, by), (0.32, -0.5), (0.02, -0.3), (0.05, 0.1), (0.2, 0.32)]]
            for lead in leads:
                frame.polyline(catmull_rom(lead), 0.6, 0.014)
        elif dev.startswith("chest_tube"):
            s = -1.0 if dev.endswith("right") else 1.0
            if lateral:
                ctrl = [(0.7, 0.4), (0.4, 0.0), (0.1, -0.6)]
            else:
                ctrl = [(s * 1.05, 0.35), (s * 0.8, 0.15), (s * 0.55, -0.25), (s * 0.42, -0.6)]
            pts = catmull_rom(ctrl)
            frame.polyline(pts, 0.3, 0.03)
            frame.polyline(pts + np.array([[0.01, 0.0]]), 0.4, 0.008)


# distractors ------------------------------------------------------------------------------

DISTRACTORS: tuple[str, ...] = ("ecg", "tubing")
"""Distractors drawn in patient space, in drawing order (the ``distractors`` column of
``ground_truth.csv`` joins the drawn ones with ``;``)."""
DISTRACTOR_P: dict[str, tuple[float, float]] = {"ecg": (0.12, 0.55), "tubing": (0.04, 0.30)}
"""Probability of each distractor on a frontal image of a (not sick, sick) study when it
is fully linked to illness (``distractor_illness_link=1``); laterals use half of it."""
SICK_SHARE: dict[str, float] = {"frontal": 0.49, "lateral": 0.27}
"""Share of images from sick studies in the default cohort (seeds 0-2, 20,000 images each:
frontal 0.489, lateral 0.266). With no link to illness every image gets the
prevalence-weighted mean of the two rates, so the corpus-wide rate stays what the linked
corpus has: ECG 0.331, tubing 0.167 on frontal images; 0.118, 0.055 on laterals."""


def distractor_probabilities(sick: bool, link: float, rate: float = 1.0, lateral: bool = False) -> dict[str, float]:
    """Probability of each of :data:`DISTRACTORS` on one image.

    ``link`` interpolates linearly between one illness-independent rate (0) and the
    illness-dependent rates of :data:`DISTRACTOR_P` (1); ``rate`` is
    ``SynthConfig.distractor_rate``.
    """
    share = SICK_SHARE["lateral" if lateral else "frontal"]
    scale = rate * (0.5 if lateral else 1.0)
    out = {}
    for name in DISTRACTORS:
        well, ill = DISTRACTOR_P[name]
        flat = well + share * (ill - well)
        linked = ill if sick else well
        out[name] = min(1.0, ((1.0 - link) * flat + link * linked) * scale)  # exact at both ends
    return out


def choose_distractors(rng: np.random.Generator, sick: bool, link: float, rate: float = 1.0,
                       lateral: bool = False) -> tuple[str, ...]:
    """Which distractors one image shows; one uniform draw per distractor, always both.

    Drawing the same number of values whatever the outcome keeps the stream aligned, so
    corpora that differ only in ``link`` or ``rate`` differ only on the images whose
    draw falls between the two probabilities (common random numbers).
    """
    p = distractor_probabilities(sick, link, rate, lateral)
    u = rng.random(len(DISTRACTORS))
    return tuple(name for name, x in zip(DISTRACTORS, u) if x < p[name])


def draw_distractors(frame: Frame, density: np.ndarray, drawn: Sequence[str], seed: Sequence[int],
                     lateral: bool = False) -> None:
    """Draw the chosen ECG electrodes with wires and oxygen/monitoring tubing (patient space).

    Each kind takes its geometry from its own stream ``[*seed, 15, k]``, so whether the
    ECG leads are drawn does not move the tubing. ``lateral`` is accepted for symmetry
    with :func:`draw_devices`; the shapes are the same on both views.
    """
    unknown = [d for d in drawn if d not in DISTRACTORS]
    if unknown:
        raise ValueError(f"unknown distractors {unknown} (valid: {DISTRACTORS})")
    seed = tuple(int(v) for v in seed)
    if "ecg" in drawn:
        rng = np.random.default_rng([*seed, 15, 0])
        k = int(rng.integers(2, 5))
        cx = rng.uniform(-0.8, 0.8, k)
        cy = rng.uniform(-0.85, 0.6, k)
        centers = np.stack([cx, cy], axis=1)
        q0, q1 = ring_segments(centers, 0.024, 12)
        r0, r1 = ring_segments(centers, 0.006, 6)
        frame.segments(np.vstack([q0, r0]), np.vstack([q1, r1]), 0.45, 0.011)
        for i in range(k):
            ex = float(np.sign(cx[i]) or 1.0) * 1.15
            ctrl = [(cx[i], cy[i]), (cx[i] + rng.uniform(-0.3, 0.3), cy[i] + rng.uniform(-0.3, 0.3)),
                    (ex, float(rng.uniform(-1.0, 1.0)))]
            frame.polyline(catmull_rom(ctrl, 5), 0.22, 0.008)
    if "tubing" in drawn:
        rng = np.random.default_rng([*seed, 15, 1])
        y0 = float(rng.uniform(-0.9, 0.3))
        ctrl = [(-1.15, y0), (-0.4, y0 + rng.uniform(-0.3, 0.3)), (0.3, y0 + rng.uniform(-0.3, 0.4)),
                (1.15, float(rng.uniform(-1, 1)))]
        pts = catmull_rom(ctrl)
        frame.polyline(pts, 0.12, 0.02)
        frame.polyline(pts + np.array([[0.0, 0.03]]), 0.12, 0.02)


def burn_annotations(image: np.ndarray, rng: np.random.Generator, view: str, rate: float, side_marker: str) -> None:
    """L/R marker and burned-in technologist text, in image coordinates (after windowing)."""
    value = float(rng.uniform(0.85, 1.0))
    if rng.random() < min(1.0, 0.7 * rate):
        x = -0.92 if side_marker == "R" else 0.78
        if view == "LATERAL":
            x = 0.78
        stamp_text(image, side_marker, x, -0.92 + 0.1 * float(rng.random()), 0.075, value, boxed=rng.random() < 0.5)
    p_text = (0.8 if view == "AP" else 0.15) * rate
    if rng.random() < min(1.0, p_text):
        words = {"AP": ["PORTABLE", "AP", "SUPINE", "PORTABLE AP", "UPRIGHT"], "PA": ["PA", "ERECT"],
                 "LATERAL": ["LAT", "LATERAL"]}[view]
        word = words[int(rng.integers(len(words)))]
        x = float(rng.uniform(-0.1, 0.2)) if view == "AP" else -0.3
        stamp_text(image, word, x, -0.97, 0.06, value)
    if rng.random() < min(1.0, 0.25 * rate):
        hh, mm = int(rng.integers(0, 24)), int(rng.integers(0, 60))
        stamp_text(image, f"{hh:02d}:{mm:02d}", 0.55, 0.86, 0.055, value)


__all__ = ["FONT", "text_bitmap", "stamp_text", "draw_devices", "draw_distractors", "burn_annotations", "DISTRACTORS",
           "DISTRACTOR_P", "SICK_SHARE", "distractor_probabilities", "choose_distractors"]
