"""Draw one chest radiograph from anatomy, findings and acquisition.

The picture is built as a map of X-ray attenuation ("density": air 0, soft tissue
~0.55, bone and metal higher) and then windowed to display brightness, because
findings are easiest to state physically: fluid replaces air, collapsed lung removes
vessel markings, an enlarged heart displaces lung. Every finding is drawn with its real
radiographic sign and its strength is multiplied by ``SynthConfig.conspicuity``.

Randomness comes from two streams: the study's *detail* stream (tube positions, patch
textures; identical for every image of the study) and the image's *noise* stream
(positioning, exposure, quantum mottle). Neither depends on the image size except the
per-pixel noise draw, which comes last. Which ECG leads / oxygen tubing an image shows,
and their shapes, come from streams of their own (see :func:`image_distractors`), so
changing how often they appear changes nothing else on the film.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage

from radpair.data.synth.anatomy import (
    Acquisition,
    Anatomy,
    fit_vessel_points,
    sample_acquisition,
    template_index,
    vessel_template,
)
from radpair.data.synth.config import SynthConfig
from radpair.data.synth.findings import CTR_LIMIT, LOBE_SIDE, Findings, side_sign, sides_of
from radpair.data.synth.masks import RegionRecorder
from radpair.data.synth.overlays import burn_annotations, choose_distractors, draw_devices, draw_distractors
from radpair.data.synth.raster import (
    F32,
    Frame,
    bump,
    clip,
    densify,
    fast_blur,
    grid,
    ramp,
    ring_segments,
    segment_distance,
    smooth_noise,
)

MIN_SIZE, MAX_SIZE = 64, 512
# fluid level at the lateral chest wall, above (+) or below (-) the dome apex
EFFUSION_LEVEL = {"small": -0.02, "moderate": 0.2, "large": 0.5}
PNEUMOTHORAX_COLLAPSE = {"small": 0.07, "moderate": 0.14, "large": 0.26}


@dataclass
class _Lung:
    """Geometry of one hemithorax in a frame (arrays are per pixel)."""

    side: str
    s: float                 # image-x sign of the side
    xs: np.ndarray           # mirrored x: distance from the midline towards the lateral wall
    u: np.ndarray            # lung-local lateral coordinate (-1 medial .. 1 lateral)
    v: np.ndarray            # lung-local vertical coordinate (-1 apex .. 1 below the recess)
    cavity: np.ndarray       # soft mask of the pleural cavity (ignoring heart and diaphragm)
    dome: np.ndarray         # y of the hemidiaphragm at each column
    lung: np.ndarray         # aerated lung seen on the film
    no_dome: np.ndarray      # lung without the diaphragm cut (where fluid can collect)
    yc: float
    hb: float
    center: float
    half: float


@lru_cache(maxsize=512)
def _template_samples(index: int, side: str, size: int, blur: float):
    """A bank vessel tree sampled for splatting at one image size (cached per worker).

    Returns points (template coordinates), unit-density weights (thicker vessels carry
    more), blur classes and an upper-zone flag; per-image gains are applied on top.
    """
    tree = vessel_template(index, side)
    # one blur class for the whole tree (one blur per image); calibre is carried by density
    amp = np.sqrt(tree.width / 0.021) * tree.width / 0.02
    w_draw = np.full(len(tree.width), 0.02 * blur)
    pts, wts, sig = densify(tree.p0, tree.p1, amp, w_draw, size, spacing=1.0)
    _, flag, _ = densify(tree.p0, tree.p1, tree.upper.astype(np.float64), w_draw, size, spacing=1.0)
    up = flag > 0
    for arr in (pts, wts, sig, up):
        arr.setflags(write=False)
    return pts, wts, sig, up


def _vessel_samples(an: Anatomy, size: int, blur: float):
    """Both lungs' vessel samples fitted to this patient (patient coordinates)."""
    parts = [_template_samples(template_index(an, sd), sd, size, blur) for sd in ("right", "left")]
    pts = np.concatenate([fit_vessel_points(p[0], an, sd) for p, sd in zip(parts, ("right", "left"))])
    return pts, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), \
        np.concatenate([p[3] for p in parts])


def _check_size(size: int) -> None:
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"image size {size} px is outside the supported range {MIN_SIZE}-{MAX_SIZE}")


def _superellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Round apex (ellipse) above the equator, boxy base below it (deep lateral recess).

    Returns a level function (1 on the outline) that is continuous everywhere, so the
    air-thickness shading derived from it has no seams.
    """
    u2, v2 = u * u, v * v
    upper = u2 + v2
    lower = np.sqrt(u2 * u2 + v2 * v2)
    return upper + (v >= 0) * (lower - upper)  # continuous across the equator


def _dome_curve(xs: np.ndarray, dome: float, center: float, half: float, cp_depth: float) -> np.ndarray:
    t = (xs - F32(center - 0.05)) * F32(1.0 / (half + 0.05))
    k = F32(0.45 * cp_depth) + (t > 0) * F32(0.55 * cp_depth)
    return F32(dome) + k * t * t


# ----------------------------------------------------------------------------------------
# frontal view
# ----------------------------------------------------------------------------------------

def _blend(D: np.ndarray, alpha: np.ndarray, target: float) -> np.ndarray:
    """Replace air by fluid/tissue: move density towards ``target`` by ``alpha`` (0..1).

    Airspace opacities are drawn this way rather than added, so they never outshine
    bone and they erase the borders they touch (the silhouette sign).
    """
    return D + clip(alpha, 0, 1) * (F32(target) - D)


def _frontal(an: Anatomy, f: Findings, view: str, acq: Acquisition, size: int, cfg: SynthConfig,
             detail: np.random.Generator, noise: np.random.Generator, pixel_rng: np.random.Generator,
             distractors: tuple[str, ...], seed: tuple[int, ...], regions: RegionRecorder | None = None) -> np.ndarray:
    c = float(cfg.conspicuity)
    ap = view == "AP"
    fr = Frame(size, acq.dx, acq.dy, acq.rotation, acq.scale * (1.03 if ap else 1.0) * an.scale)
    X, Y, e = fr.x, fr.y, fr.edge
    one = F32(1.0)
    tissue = an.soft_tissue

    # --- geometry modified by findings: volume loss, mediastinal shift ------------------
    elev = {"right": 0.0, "left": 0.0}
    shift = 0.0
    ak = f.atelectasis_kind
    if ak:
        if ak.startswith("plate") or ak == "bibasilar":
            for sd in (("right", "left") if ak == "bibasilar" else (ak.split("_")[1],)):
                elev[sd] -= 0.025 * c
        else:
            sd = "right" if ak in ("lobar_RUL", "lobar_RLL") else "left"
            elev[sd] -= 0.06 * c
            shift += side_sign(sd) * 0.025 * c
    if f.effusion_size == "large" and f.effusion_side in ("right", "left"):
        shift -= side_sign(f.effusion_side) * 0.03 * c  # pushed away from a large effusion
    volume = -acq.inspiration + (0.05 if ap else 0.0)   # + = shallower breath, domes higher

    hil = {sd: (an.hilum(sd)[0] + shift * 0.5, an.hilum(sd)[1] - volume * 0.4) for sd in ("right", "left")}
    carina_y = min(hil["right"][1], hil["left"][1]) - 0.07

    # --- heart: a tilted ellipse whose lower third sinks into the diaphragm -------------
    tilt = an.heart_tilt
    ctr = float(clip(CTR_LIMIT + (f.ctr - CTR_LIMIT) * c, 0.3, 0.8))  # conspicuity scales the departure
    if cfg.heart_size_confounding:  # shallow breath and AP projection make any heart look larger
        ctr = float(clip(ctr * (1.0 + cfg.heart_size_confounding * 1.5 * volume), 0.3, 0.8))
    hb_ = an.heart_height * (1.05 if ap else 1.0) * float(np.sqrt(ctr / 0.45))  # heart_scale is in heart_height
    ext = ctr * an.thorax_width / 2.0 * (1.04 if ap else 1.0) * an.heart_scale
    st, ct = np.sin(tilt), np.cos(tilt)
    ha = float(np.sqrt(max(ext * ext - (hb_ * st) ** 2, 0.01) / (ct * ct)))
    ext_y = float(np.sqrt((ha * st) ** 2 + (hb_ * ct) ** 2))
    dome_mean = 0.5 * (an.dome_right + an.dome_left) - volume
    hx = an.heart_center_x + shift
    hy = dome_mean + 0.1 - 0.7 * ext_y
    dxh, dyh = X - F32(hx), Y - F32(hy)
    a1 = (dxh * F32(ct) + dyh * F32(st)) * F32(1.0 / ha)
    b1 = (dyh * F32(ct) - dxh * F32(st)) * F32(1.0 / hb_)
    rh = a1 * a1 + b1 * b1
    heart = ramp((np.sqrt(rh) - one) * F32(min(ha, hb_)), e)
    if regions is not None and f.cardiomegaly:
        regions.add("cardiomegaly", heart)

    # --- mediastinum -------------------------------------------------------------------------
    mw = F32(an.mediastinum_half_width) + F32(0.03) * clip((Y + F32(0.2)) * F32(2.0), 0, 1)
    med = ramp(np.abs(X - F32(shift)) - mw, e)
    kx, ky = shift + an.mediastinum_half_width * 0.8, -0.33 - volume * 0.3
    knob = ramp(np.sqrt((X - F32(kx)) ** 2 + (Y - F32(ky)) ** 2) - F32(an.aortic_knob), e)
    solid = np.maximum(np.maximum(med, knob), heart)

    # --- lungs -----------------------------------------------------------------------------
    lungs: dict[str, _Lung] = {}
    thick_all = np.zeros_like(X)
    for sd in ("right", "left"):
        s = side_sign(sd)
        xs = X * F32(s)
        dome = an.dome(sd) - volume + elev[sd]
        top = an.lung_top + (0.05 if ap else 0.0) - volume * 0.3
        bottom = dome + 1.6 * an.cp_depth
        yc, hb = 0.5 * (top + bottom), 0.5 * (bottom - top)
        v = (Y - F32(yc)) * F32(1.0 / hb)
        u = (xs - F32(an.lung_center) + F32(0.09) * clip(-v, 0, 1)) * F32(1.0 / an.lung_half_width)
        r = _superellipse(u, v)
        dist = (r - one) * F32(0.5) * F32(an.lung_half_width)
        cavity = ramp(dist, e)
        dcurve = _dome_curve(xs, dome, an.lung_center, an.lung_half_width, an.cp_depth)
        no_dome = cavity * (one - solid)
        lung = no_dome * ramp(Y - dcurve, e)
        # air thickness: deepest in the middle of each lung, thin at the edges and apex
        thick_all += (np.sqrt(clip(one - r, 0, 1)) * F32(0.55) + F32(0.4)) * cavity
        lungs[sd] = _Lung(sd, s, xs, u, v, cavity, dcurve, lung, no_dome, yc, hb, an.lung_center, an.lung_half_width)
    lung_all = lungs["right"].lung + lungs["left"].lung
    below = np.where(X < 0, lungs["right"].dome, lungs["left"].dome)
    behind_heart = (lungs["right"].cavity + lungs["left"].cavity) * heart * ramp(Y - below, 0.02)

    # --- body and bones --------------------------------------------------------------------
    t = clip((Y + one) * F32(1.0 / 0.3), 0, 1)
    bw = F32(0.27) + F32(an.body_half_width - 0.27) * (t * t * (F32(3.0) - F32(2.0) * t))
    bw = bw - F32(0.06) * clip(Y - F32(0.55), 0, None)
    body = ramp(np.abs(X) - bw, 0.03)
    bx = clip(X / bw, -1, 1)
    D = F32(tissue) * body * (F32(0.7) + F32(0.3) * np.sqrt(one - bx * bx))  # thinner at the flanks
    D += F32(0.04) * ramp(below - Y, 0.05) * body * (one - solid)  # liver / upper abdomen
    D -= F32(an.lung_air) * lung_all * thick_all * (one - F32(0.1) * clip(Y - F32(0.05), 0, 1))
    D -= F32(an.lung_air * 0.3) * behind_heart  # retrocardiac lung seen through the heart
    gb_y = an.dome_left - volume + 0.1
    D -= F32(0.12) * ramp(np.sqrt(((X - F32(0.32)) / F32(1.4)) ** 2 + (Y - F32(gb_y)) ** 2) - F32(0.05), 0.02) * body
    D += F32(0.03) * heart * np.sqrt(clip(one - rh, 0, 1))
    D += F32(0.07) * ramp(np.abs(X - F32(shift * 0.3)) - F32(0.065), 0.02) * body  # spine
    tr = ramp(np.abs(X - F32(shift * 0.7)) - F32(0.03), 0.015) * ramp(Y - F32(carina_y), 0.02)
    D -= F32(0.08) * tr * body
    for sd in ("right", "left"):  # main bronchi
        sl, m = fr.capsule((shift * 0.7, carina_y + 0.02), hil[sd], 0.018, 0.015)
        if sl is not None:
            D[sl] -= F32(0.07) * m
    # ribs: posterior arcs (rising from the spine, falling at the lateral wall), fainter anterior ribs
    ax_ = np.abs(X)
    thorax = ramp(ax_ - F32(an.lung_center + an.lung_half_width + 0.05), 0.04) * ramp(F32(an.lung_top - 0.08) - Y, 0.04)
    thorax *= ramp(Y - (below + F32(0.25)), 0.1)
    yr = Y - (F32(-0.3) * ax_ + F32(an.rib_curve * 2.2) * ax_ * ax_)
    ph = yr * F32(1.0 / an.rib_spacing) * (one + F32(0.12) * yr) + F32(an.rib_phase)
    fpart = ph - np.floor(ph)
    soft = max(0.08, 1.2 * fr.px / an.rib_spacing)
    ribs = clip(np.minimum(fpart, F32(0.4) - fpart) * F32(1.0 / soft), 0, 1)
    ribs *= F32(0.8) + F32(0.25) * np.cos((ph - fpart) * F32(2.4) + F32(an.rib_phase * 6.0))  # rib-to-rib variation
    ribs += F32(0.5) * bump(fpart - F32(0.37), max(0.05, soft))  # dense inferior cortex
    yr2 = Y - F32(0.42) * (F32(0.85) - ax_)
    ph2 = yr2 * F32(1.0 / (an.rib_spacing * 1.3)) + F32(an.rib_phase * 0.7)
    f2 = ph2 - np.floor(ph2)
    ribs2 = clip(np.minimum(f2, F32(0.33) - f2) * F32(1.0 / soft), 0, 1) * ramp(F32(0.2) - ax_, 0.12)
    ribs2 *= ramp(Y - F32(0.2), 0.12)
    D += F32(an.rib_density) * (ribs + F32(0.4) * ribs2) * thorax * (one - F32(0.5) * solid)
    # clavicles (projected higher and flatter on AP films)
    cy = an.clavicle_y - (0.07 if ap else 0.0)
    tilt_c = an.clavicle_tilt * (0.4 if ap else 1.0)
    for s in (-1.0, 1.0):
        p0, mid, p1 = (s * 0.06, cy + 0.02), (s * 0.32, cy - 0.01 - tilt_c * 0.35), (s * 0.68, cy - tilt_c - 0.04)
        sl = fr.box([p0, mid, p1], 0.05)
        if sl is not None:
            xx, yy = X[sl], Y[sl]
            d = np.minimum(segment_distance(xx, yy, p0, mid), segment_distance(xx, yy, mid, p1))
            D[sl] += F32(0.11) * ramp(d - F32(0.024), max(0.012, fr.px)) * body[sl]
    for s in (-1.0, 1.0):
        if ap:  # scapulae project over the lateral upper lungs on AP films
            sl, m = fr.polygon([(s * 0.62, -0.8), (s * 0.98, -0.8), (s * 0.92, -0.12), (s * 0.74, -0.3)], 0.12)
            if sl is not None:
                D[sl] += F32(0.035) * m * body[sl]
        sl = fr.box([(s * 0.95, -0.88)], 0.16)
        if sl is not None:  # humeral heads
            hum = np.sqrt((X[sl] - F32(s * 0.95)) ** 2 + (Y[sl] - F32(-0.88)) ** 2)
            D[sl] += F32(0.1) * ramp(hum - F32(0.13), 0.03) * body[sl]
    if an.female:
        for s in (-1.0, 1.0):
            br = np.sqrt(((X - F32(s * 0.52)) / F32(1.2)) ** 2 + (Y - F32(0.42)) ** 2)
            D += F32(0.06) * ramp(br - F32(0.33), 0.06) * ramp(F32(0.25) - Y, 0.12) * body

    # --- pneumothorax geometry (the collapsed lung keeps the markings) ------------------------
    sev = f.edema_severity
    collapsed = None
    if f.pneumothorax_side:
        lg = lungs[f.pneumothorax_side]
        k = PNEUMOTHORAX_COLLAPSE[f.pneumothorax_size] * min(1.5, 0.6 + 0.4 * c)
        uc = (lg.xs - F32(lg.center - k * lg.half) + F32(0.09) * clip(-lg.v, 0, 1)) * F32(1.0 / (lg.half * (1 - k)))
        vc = (Y - F32(lg.yc + k * 1.4 * lg.hb)) * F32(1.0 / (lg.hb * (1 - 1.4 * k)))
        rc = _superellipse(uc, vc)
        dc = (rc - one) * F32(0.5) * F32(lg.half * (1 - k))
        collapsed = ramp(dc, e)

    # --- vessels and hila ----------------------------------------------------------------------
    # cephalization: upper-zone vessels become as prominent as (or more than) lower-zone ones
    upper_w = 0.6 + (0.75 * c if sev >= 1 else 0.0)
    blur = 1.0 + (0.9 * c if sev >= 2 else 0.0)  # interstitial fluid makes vessel margins indistinct
    pts, wts, sig, upper = _vessel_samples(an, size, round(blur, 2))
    pts = pts + np.array([[shift * 0.5, -volume * 0.4]])
    gain = an.vessel_density * (1.0 + (0.2 * c if sev >= 1 else 0.0)) / blur ** 0.5 * fr.scale
    fr.splat_points(pts, wts * np.where(upper, gain * upper_w, gain), sig, layer="vessels")
    ves = fr.flush_lines("vessels")
    # no markings beyond the pleural line; scaled by conspicuity like every other sign (at 0
    # the pneumothorax must be invisible: before generator version 2 the markings still went)
    vmask = lung_all if collapsed is None else \
        lung_all - F32(min(1.0, c)) * lungs[f.pneumothorax_side].lung * (one - collapsed)
    D += ves * (F32(0.25) + F32(0.75) * vmask) * body

    for sd, lg in lungs.items():
        hx_, hy_ = hil[sd]
        ddx, ddy = X - F32(hx_), Y - F32(hy_)
        rr2 = ddx * ddx + ddy * ddy
        hil_r = 0.08 + (0.02 * c if sev >= 1 else 0.0)
        D += F32(0.06 + (0.03 * c if sev >= 1 else 0.0)) * clip(one - rr2 * F32(1.0 / hil_r ** 2), 0, 1) * lg.no_dome
        if sev >= 1:  # upper-zone vessel engorgement also raises upper-lobe density slightly
            D += F32(0.02 * c) * lg.lung * clip((F32(hy_) - Y) * F32(3.0), 0, 1)
            if regions is not None:  # the enlarged hilum and the engorged upper zone
                regions.add("edema", clip(one - rr2 * F32(1.0 / hil_r ** 2), 0, 1) * lg.no_dome)
                regions.add("edema", lg.lung * clip((F32(hy_) - Y) * F32(3.0), 0, 1))
        if sev >= 2:  # hazy, indistinct hila and perihilar interstitial haze
            D = _blend(D, F32(0.16 * c) * np.exp(-rr2 * F32(1.0 / 0.26 ** 2)) * lg.lung, tissue)
            if regions is not None:
                regions.add("edema", np.exp(-rr2 * F32(1.0 / 0.26 ** 2)) * lg.lung)
        if sev >= 3:  # bilateral perihilar "batwing" alveolar opacity, sparing the periphery
            fluff = clip(F32(0.7) + F32(0.5) * smooth_noise(int(detail.integers(2**31)), fr, 9), 0, 1.2)
            bat = np.exp(-((ddx * F32(1.0 / 0.36)) ** 2 + (ddy * F32(1.0 / 0.33)) ** 2))
            D = _blend(D, F32(0.6 * c) * bat * fluff * lg.no_dome * clip(F32(1.2) - lg.u * lg.u, 0, 1), tissue)
            if regions is not None:
                regions.add("edema", bat * lg.no_dome * clip(F32(1.2) - lg.u * lg.u, 0, 1))

    if sev >= 2:
        reticular = smooth_noise(int(detail.integers(2**31)), fr, 22)
        for sd, lg in lungs.items():
            base = clip((Y - F32(hil[sd][1])) * F32(2.5), 0, 1)  # lower zones
            lateral = clip((lg.u - F32(0.4)) * F32(2.5), 0, 1)
            D = _blend(D, F32(0.09 * c) * lg.lung * base * (F32(0.5) + lateral) * (F32(0.75) + F32(0.35) * reticular),
                       tissue)
            if regions is not None:  # the lower lateral interstitial zone (Kerley B lines lie in it)
                regions.add("edema", lg.lung * base * (F32(0.5) + lateral))
            # Kerley B lines: short horizontal septal lines reaching the lateral pleura at the bases
            edge_x = an.lung_center + an.lung_half_width
            dome_lat = an.dome(sd) - volume + elev[sd] + an.cp_depth * 0.8
            n_k = int(detail.integers(8, 14))
            yk = detail.uniform(dome_lat - 0.4, dome_lat - 0.04, n_k)
            ln = detail.uniform(0.035, 0.08, n_k)
            x_out = edge_x - 0.01
            p0 = np.stack([np.full(n_k, lg.s * x_out), yk], axis=1)
            p1 = np.stack([lg.s * (x_out - ln), yk + detail.uniform(-0.006, 0.006, n_k)], axis=1)
            fr.segments(p0, p1, np.full(n_k, 0.3 * c), 0.007, layer="septal")
            # peribronchial cuffing: thick-walled bronchi seen end-on around the hilum
            hx_, hy_ = hil[sd]
            ang = detail.uniform(-1.3, 1.3, 4)
            rad = detail.uniform(0.07, 0.16, 4)
            centers = np.stack([hx_ + lg.s * rad * np.cos(ang), hy_ + rad * np.sin(ang)], axis=1)
            q0, q1 = ring_segments(centers, 0.013)
            fr.segments(q0, q1, np.full(len(q0), 0.18 * c), 0.008, layer="septal")
        D += fr.flush_lines("septal") * lung_all

    # --- consolidation: airless lobe, fissure-bounded where anatomy gives a fissure ----------
    if f.consolidation_lobe:
        lobe = f.consolidation_lobe
        lg = lungs[LOBE_SIDE[lobe]]
        hy_ = hil[lg.side][1]
        fiss = F32(hy_ + 0.04)
        if lobe == "RUL":
            region = ramp(Y - fiss, 0.012)
        elif lobe == "LUL":
            region = ramp(Y - F32(hy_ + 0.08), 0.1)
        elif lobe == "RML":
            region = ramp(fiss - Y, 0.012) * ramp(lg.u - F32(0.3), 0.3) * ramp(Y - (lg.dome - F32(0.02)), 0.06)
        elif lobe == "lingula":
            region = ramp(F32(hy_ + 0.02) - Y, 0.06) * ramp(lg.u - F32(0.25), 0.3) * \
                ramp(Y - (lg.dome - F32(0.02)), 0.06)
        else:  # lower lobes: ill-defined upper margin, silhouette the hemidiaphragm
            region = ramp(F32(hy_ + 0.1) - Y, 0.16)
        region = region * (lg.lung + F32(0.6) * (lg.no_dome - lg.lung)
                           + F32(0.5) * behind_heart * (lobe == "LLL"))
        tex = smooth_noise(int(detail.integers(2**31)), fr, 10)
        if f.consolidation_pattern == "patchy":
            dens = clip(tex * F32(1.3) + F32(0.3), 0, 1)
        else:
            dens = clip(F32(0.8) + F32(0.3) * tex, 0, 1)
        hx_ = hil[lg.side][0]
        ddx, ddy = X - F32(hx_), Y - F32(hy_)
        th = np.arctan2(ddy, ddx * F32(lg.s))
        rr = np.sqrt(ddx * ddx + ddy * ddy)
        # air bronchograms: branching lucent tubes inside the airless lobe
        phase = F32(detail.uniform(0, 6.28))
        brc = clip((np.cos(th * F32(8.0) + rr * F32(5.0) + phase) - F32(0.82)) * F32(5.0), 0, 1)
        brc *= clip(one - rr * F32(1.8), 0, 1)
        D = _blend(D, F32(0.62 * c) * region * dens * (one - F32(0.6) * brc), tissue)
        if regions is not None:  # air bronchograms are inside the consolidation: not subtracted
            regions.add("consolidation", region * dens)

    # --- atelectasis ----------------------------------------------------------------------------
    if ak:
        if ak.startswith("plate") or ak == "bibasilar":
            for sd in (("right", "left") if ak == "bibasilar" else (ak.split("_")[1],)):
                lg = lungs[sd]
                dome_c = an.dome(sd) - volume + elev[sd]
                for _ in range(int(detail.integers(1, 3))):
                    x0 = an.lung_center + an.lung_half_width * detail.uniform(-0.3, 0.4)
                    y0 = dome_c - detail.uniform(0.05, 0.16)
                    ln = detail.uniform(0.09, 0.16)
                    ang = detail.uniform(-0.25, 0.15)
                    p0 = (lg.s * (x0 - ln * np.cos(ang)), y0 - ln * np.sin(ang))
                    p1 = (lg.s * (x0 + ln * np.cos(ang)), y0 + ln * np.sin(ang))
                    sl, band = fr.capsule(p0, p1, float(detail.uniform(0.014, 0.022)), 0.012)
                    if sl is not None:
                        D[sl] = _blend(D[sl], F32(0.55 * c) * band * lg.no_dome[sl], tissue)
                        if regions is not None:
                            regions.add("atelectasis", band * lg.no_dome[sl], sl)
                D = _blend(D, F32(0.1 * c) * lg.lung * clip((Y - F32(dome_c - 0.25)) * F32(4.0), 0, 1), tissue)
        else:
            sd = "right" if ak in ("lobar_RUL", "lobar_RLL") else "left"
            lg = lungs[sd]
            s = lg.s
            hy_ = hil[sd][1]
            dome_c = an.dome(sd) - volume + elev[sd]
            if ak == "lobar_RUL":
                tri = [(s * 0.08, an.lung_top + 0.05), (s * 0.66, an.lung_top + 0.22), (s * 0.12, hy_ - 0.04)]
                reg = lg.no_dome
            else:  # lower-lobe collapse: triangle against the spine ("sail" behind the heart on the left)
                tri = [(s * 0.04, hy_ + 0.02), (s * 0.04, dome_c + 0.1), (s * 0.46, dome_c + 0.1)]
                reg = lg.cavity * (lg.no_dome + behind_heart)
            sl, m = fr.polygon(tri, 0.03)
            if sl is not None:
                D[sl] = _blend(D[sl], F32(0.7 * c) * m * reg[sl], tissue + 0.1)
                if regions is not None:
                    regions.add("atelectasis", m * reg[sl], sl)

    # --- nodule -----------------------------------------------------------------------------------
    if f.nodule is not None:
        nd = f.nodule
        lg = lungs[nd.side]
        nx_ = lg.s * (an.lung_center + an.lung_half_width * 0.75 * nd.lateral)
        ny_ = min(lg.yc + lg.hb * 0.7 * nd.vertical, an.dome(nd.side) - volume - 0.06)
        rad = nd.diameter_mm / 150.0 / 2.0
        dn2 = ((X - F32(nx_)) ** 2 + (Y - F32(ny_)) ** 2) * F32(1.0 / rad ** 2)
        sphere = np.sqrt(clip(one - dn2, 0, 1))  # projected thickness of a sphere
        soft_n = ramp((np.sqrt(dn2) - one) * F32(rad), max(fr.px, 0.008))
        D += F32(0.26 * c) * np.maximum(sphere, soft_n * F32(0.6))
        if regions is not None:  # soft_n is 0.5 on the outline (a sub-pixel nodule keeps its nearest pixel)
            regions.add("nodule", soft_n)

    # --- pneumothorax: lucent rim without markings, and the visceral pleural line -------------
    if f.pneumothorax_side:
        sd = f.pneumothorax_side
        lg = lungs[sd]
        D -= F32(0.05 * c) * lg.lung * (one - collapsed)
        if regions is not None:
            regions.add("pneumothorax_space", lg.lung * (one - collapsed))
        k = PNEUMOTHORAX_COLLAPSE[f.pneumothorax_size] * min(1.5, 0.6 + 0.4 * c)
        tt = np.linspace(-0.62 * np.pi, 0.3 * np.pi, 60)
        cu, sv = np.cos(tt), np.sin(tt)
        lower = sv > 0
        uu = np.where(lower, np.sign(cu) * np.abs(cu) ** 0.5, cu)
        vv = np.where(lower, np.sign(sv) * np.abs(sv) ** 0.5, sv)  # on sqrt(u^4 + v^4) = 1
        yy = (lg.yc + k * 1.4 * lg.hb) + vv * lg.hb * (1 - 1.4 * k)
        xx = (an.lung_center - k * an.lung_half_width) + uu * an.lung_half_width * (1 - k) - 0.09 * clip(-vv, 0, 1)
        keep = yy < an.dome(sd) - volume + an.cp_depth * 0.5
        fr.polyline(np.stack([lg.s * xx[keep], yy[keep]], axis=1), 0.35 * c, 0.007, layer="pleura")
        D += fr.flush_lines("pleura") * lg.cavity
        if regions is not None:  # the same line at unit strength on a private layer (visible even at c = 0)
            fr.polyline(np.stack([lg.s * xx[keep], yy[keep]], axis=1), 1.0, 0.007, layer="mask:pleura")
            line = fr.flush_lines("mask:pleura") * lg.cavity
            peak = float(line.max())
            if peak > 0:
                regions.add("pneumothorax_line", line, threshold=0.35 * peak)
        D += F32(0.025 * c) * collapsed * lg.lung  # the partially collapsed lung is denser

    # --- pleural effusion: fluid replaces air from the costophrenic angle upwards --------------
    if f.effusion_side:
        for sd in sides_of(f.effusion_side):
            lg = lungs[sd]
            level = EFFUSION_LEVEL[f.effusion_size]
            if level > 0:
                level *= 0.75 + 0.25 * min(c, 2.0)
            if f.effusion_side == "bilateral" and sd == "left":
                level -= 0.06  # the right effusion is usually the larger one
            apex = an.dome(sd) - volume + elev[sd]
            lat = clip(lg.u, -1, 1)
            # meniscus: the fluid surface climbs the lateral chest wall, lowest medially
            y_top = F32(apex - level) + F32(0.12) * (one - lat * lat) + F32(0.1) * clip(-lat, 0, 1)
            fluid = clip((Y - y_top) * F32(1.0 / (0.03 + 0.08 * max(level, 0.0))), 0, 1) * lg.no_dome
            fluid *= ramp(Y - (lg.dome + F32(0.05)), 0.04)  # the recess just below the dome, not the abdomen
            if regions is not None:
                regions.add("pleural_effusion", fluid)
            if ap:  # supine layering: a veil over the hemithorax instead of a sharp meniscus
                veil_peak = min(0.55, 0.12 + 0.7 * max(level, 0.0))
                veil = F32(veil_peak) * lg.no_dome * \
                    clip((Y - F32(lg.yc - lg.hb)) * F32(0.8), 0, 1)
                fluid = np.maximum(fluid * F32(0.6), veil)
                if regions is not None:
                    regions.add("pleural_effusion", veil, threshold=0.5 * veil_peak)
            D = _blend(D, F32(min(1.0, 0.9 * c)) * fluid, tissue + 0.03)

    # --- devices and distractors -------------------------------------------------------------
    dens_dev = np.zeros_like(D)
    draw_devices(fr, dens_dev, an, f.devices, detail, carina_y)
    draw_distractors(fr, dens_dev, distractors, seed)
    D += dens_dev + fr.flush_lines()
    return _expose(D, acq, view, size, cfg, noise, pixel_rng)


# ----------------------------------------------------------------------------------------
# lateral view (deliberately cruder: the frontal image carries most of the signal)
# ----------------------------------------------------------------------------------------

def _lateral(an: Anatomy, f: Findings, acq: Acquisition, size: int, cfg: SynthConfig,
             detail: np.random.Generator, noise: np.random.Generator, pixel_rng: np.random.Generator,
             distractors: tuple[str, ...], seed: tuple[int, ...], regions: RegionRecorder | None = None) -> np.ndarray:
    """A cruder left-lateral view: anterior to the image left, posterior to the right.

    Both lungs superimpose; the heart sits anteriorly on the diaphragm, the spine
    posteriorly. Findings appear where they project on a lateral film (fluid in the
    posterior costophrenic sulcus, lower-lobe opacity behind the major fissure).
    """
    c = float(cfg.conspicuity)
    fr = Frame(size, acq.dx, acq.dy, acq.rotation, acq.scale * an.scale)
    X, Y, e = fr.x, fr.y, fr.edge
    one = F32(1.0)
    tissue = an.soft_tissue + 0.05
    volume = -acq.inspiration
    depth = an.lung_half_width / 0.34  # bigger chests are deeper too
    # body: chest wall anteriorly, back posteriorly; arms overlap the upper chest
    bx = X * F32(1.0 / (0.84 * depth))
    body = ramp(np.abs(bx) - one, 0.03) * ramp(-(Y + F32(1.1)), 0.05)
    D = F32(tissue) * body * (F32(0.75) + F32(0.25) * np.sqrt(clip(one - bx * bx, 0, 1)))
    D += F32(0.06) * ramp(Y + F32(0.45), 0.2) * body  # arms and shoulders over the apices
    # lungs (both, superimposed)
    top, dome_a, dome_p = an.lung_top + 0.02, 0.3 + volume + (an.dome_right - 0.3), 0.62 + volume
    lx0, lx1 = -0.74 * depth, 0.62 * depth
    u = (X - F32(0.5 * (lx0 + lx1))) * F32(2.0 / (lx1 - lx0))
    yc, hb = 0.5 * (top + dome_p + 0.2), 0.5 * (dome_p + 0.2 - top)
    v = (Y - F32(yc)) * F32(1.0 / hb)
    r = _superellipse(u, v)
    cavity = ramp((r - one) * F32(0.5) * F32(0.6), e)
    tq = (X - F32(lx0)) * F32(1.0 / (lx1 - lx0))  # 0 anterior .. 1 posterior
    dome = F32(dome_a) + F32(dome_p - dome_a) * tq * tq - F32(0.1) * np.sin(tq * F32(np.pi))
    # heart: anterior, resting on the diaphragm, wider with cardiomegaly
    ctr = float(clip(CTR_LIMIT + (f.ctr - CTR_LIMIT) * c, 0.3, 0.8))
    ha = 0.27 * ctr / 0.45 * depth * an.heart_scale
    hb_ = 0.3 * float(np.sqrt(ctr / 0.45)) * an.heart_scale
    hx, hy = lx0 + ha * 0.8, dome_a - 0.1
    rh = ((X - F32(hx)) * F32(1.0 / ha)) ** 2 + ((Y - F32(hy)) * F32(1.0 / hb_)) ** 2
    heart = ramp((np.sqrt(rh) - one) * F32(0.25), e)
    if regions is not None and f.cardiomegaly:
        regions.add("cardiomegaly", heart)
    spine = ramp(np.abs(X - F32(lx1 - 0.02)) - F32(0.1), 0.02) * body
    lung = cavity * ramp(Y - dome, e) * (one - heart)
    D -= F32(an.lung_air * 1.05) * lung * (F32(0.45) + F32(0.6) * np.sqrt(clip(one - r, 0, 1)))
    D -= F32(an.lung_air * 0.25) * cavity * heart * ramp(Y - dome, e)
    D += F32(0.03) * heart * np.sqrt(clip(one - rh, 0, 1))
    # vertebral bodies with disc spaces; the lower spine looks darker (the "spine sign")
    ph = (Y + F32(1.0)) * F32(1.0 / 0.13)
    fp = ph - np.floor(ph)
    D += F32(0.07) * spine * clip(np.minimum(fp, F32(0.8) - fp) * F32(6.0), 0, 1) * \
        (one - F32(0.35) * clip(Y + F32(0.3), 0, 1))
    sl, m = fr.capsule((lx0 - 0.03, -0.6), (lx0 - 0.06, 0.28), 0.022, 0.012)  # sternum
    if sl is not None:
        D[sl] += F32(0.08) * m
    sl, m = fr.capsule((-0.02, -1.1), (0.06, -0.12), 0.035, 0.02)  # trachea
    if sl is not None:
        D[sl] -= F32(0.05) * m * body[sl]
    hil_r2 = (X - F32(0.08)) ** 2 + (Y + F32(0.02)) ** 2
    sev = f.edema_severity
    hil_w = 0.12 + (0.03 * c if sev >= 1 else 0.0)
    D += F32(0.08 + (0.04 * c if sev >= 1 else 0.0)) * clip(one - hil_r2 * F32(1.0 / hil_w ** 2), 0, 1) * cavity
    if regions is not None and sev >= 1:
        regions.add("edema", clip(one - hil_r2 * F32(1.0 / hil_w ** 2), 0, 1) * cavity)
    if sev >= 2:
        D = _blend(D, F32(0.15 * c) * np.exp(-hil_r2 * F32(1.0 / 0.3 ** 2)) * lung, tissue)
        if regions is not None:
            regions.add("edema", np.exp(-hil_r2 * F32(1.0 / 0.3 ** 2)) * lung)
    if sev >= 3:
        fluff = clip(F32(0.7) + F32(0.5) * smooth_noise(int(detail.integers(2**31)), fr, 9), 0, 1.2)
        D = _blend(D, F32(0.55 * c) * np.exp(-hil_r2 * F32(1.0 / 0.42 ** 2)) * fluff * lung, tissue)
        if regions is not None:
            regions.add("edema", np.exp(-hil_r2 * F32(1.0 / 0.42 ** 2)) * lung)
    if f.consolidation_lobe:
        lobe = f.consolidation_lobe
        # major fissure runs from posterior-superior to anterior-inferior
        fiss = (Y - F32(dome_a)) + (X - F32(lx0 + 0.15)) * F32(0.95 / 0.9)
        if lobe in ("RLL", "LLL"):
            reg = ramp(-fiss, 0.06)
        elif lobe in ("RML", "lingula"):
            reg = ramp(fiss, 0.02) * ramp(F32(-0.02) - Y, 0.02)
        else:
            reg = ramp(fiss, 0.06) * ramp(Y + F32(0.05), 0.1)
        tex = smooth_noise(int(detail.integers(2**31)), fr, 10)
        D = _blend(D, F32(0.55 * c) * reg * lung * clip(F32(0.8) + F32(0.3) * tex, 0, 1), tissue)
        if regions is not None:
            regions.add("consolidation", reg * lung * clip(F32(0.8) + F32(0.3) * tex, 0, 1))
    if f.atelectasis_kind:
        sl, m = fr.capsule((-0.3, dome_a - 0.08), (0.25, dome_a - 0.02), 0.018, 0.012)
        if sl is not None:
            D[sl] = _blend(D[sl], F32(0.45 * c) * m * lung[sl], tissue)
            if regions is not None:
                regions.add("atelectasis", m * lung[sl], sl)
    if f.nodule is not None:
        nd = f.nodule
        ny_ = min(yc + 0.6 * hb * nd.vertical, dome_a - 0.08)
        nx_ = lx0 + (lx1 - lx0) * (0.3 + 0.4 * (nd.lateral * 0.5 + 0.5))
        rad = nd.diameter_mm / 150.0 / 2.0
        sl = fr.box([(nx_, ny_)], rad + 0.03)
        if sl is not None:
            dn2 = ((X[sl] - F32(nx_)) ** 2 + (Y[sl] - F32(ny_)) ** 2) * F32(1.0 / rad ** 2)
            D[sl] += F32(0.17 * c) * np.sqrt(clip(one - dn2, 0, 1))
            if regions is not None:  # the disc inside the sphere's outline
                regions.add("nodule", np.sqrt(clip(one - dn2, 0, 1)), sl, threshold=1e-6)
    if f.effusion_side:
        level = {"small": -0.05, "moderate": 0.15, "large": 0.4}[f.effusion_size]
        y_top = F32(dome_p - 0.12 - level) + F32(0.25) * (one - clip(tq * F32(1.2), 0, 1))
        fluid = clip((Y - y_top) * F32(1.0 / (0.03 + 0.08 * max(level, 0.0))), 0, 1) * cavity
        D = _blend(D, F32(min(1.0, 0.9 * c)) * fluid, tissue)
        if regions is not None:
            regions.add("pleural_effusion", fluid)
    dens_dev = np.zeros_like(D)
    draw_devices(fr, dens_dev, an, f.devices, detail, -0.15, lateral=True)
    draw_distractors(fr, dens_dev, distractors, seed, lateral=True)
    D += dens_dev + fr.flush_lines()
    return _expose(D, acq, "LATERAL", size, cfg, noise, pixel_rng)


# ----------------------------------------------------------------------------------------
# exposure, annotations, noise
# ----------------------------------------------------------------------------------------

def _expose(D: np.ndarray, acq: Acquisition, view: str, size: int, cfg: SynthConfig,
            noise: np.random.Generator, pixel_rng: np.random.Generator) -> np.ndarray:
    """Density -> display brightness: window, gamma, exposure drift, mottle, 8-bit.

    ``cfg.exposure_*`` shift the look-up table and ``cfg.noise_grain`` correlates the mottle
    (another scanner); at their defaults they leave every operation as it was.
    """
    psf = 0.005 * size / 2.0  # focal spot / detector blur, ~0.75 mm
    if psf >= 0.5:
        D = fast_blur(D, psf)
    lo, hi = -0.02, 0.84
    img = clip((D - F32(lo)) * F32(1.0 / (hi - lo)), 0, 1)
    img = img ** F32(acq.gamma * 1.1 * cfg.exposure_gamma)
    img = (img - F32(0.45)) * F32(acq.contrast * cfg.exposure_contrast) + \
        F32(0.45 + acq.brightness + cfg.exposure_brightness)
    nz = float(cfg.noise)
    a, b, cq, dq = noise.normal(0.0, 1.0, 4)
    x0, y0 = grid(size)
    img += F32(0.02 * nz) * (F32(a) * x0 + F32(b) * y0 + F32(cq) * x0 * y0 + F32(dq) * (x0 * x0 + y0 * y0 - F32(0.66)))
    side = "R" if noise.random() < 0.5 else "L"
    burn_annotations(img, noise, view, cfg.distractor_rate, side)
    sd = 0.022 * nz * (1.35 if view == "AP" else 1.0)
    mottle = pixel_rng.standard_normal((size, size), dtype=np.float32)
    if cfg.noise_grain > 0:
        mottle = _grain(mottle, cfg.noise_grain * size)
    img += mottle * (F32(0.3 * sd) + F32(0.7 * sd) * img)
    return clip(img * F32(255.0) + F32(0.5), 0, 255).astype(np.uint8)


def _grain(white: np.ndarray, sigma_px: float) -> np.ndarray:
    """White noise -> noise correlated over ``sigma_px`` pixels with unit standard deviation
    (periodic blur, so the grain is the same at the borders as in the middle)."""
    blurred = ndimage.gaussian_filter(white, sigma_px, mode="wrap")
    return blurred * F32(1.0 / max(float(blurred.std()), 1e-6))


def _seed_tuple(seed: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in seed) if isinstance(seed, (tuple, list)) else (int(seed),)


def is_sick(findings: Findings, setting_or_view: str) -> bool:
    """The study state that ECG leads and oxygen tubing follow when they are linked to
    illness: support devices, edema grade >= 2, or intensive care (``"icu"``; without a
    care setting, a portable ``"AP"`` film stands in for it)."""
    return bool(findings.devices) or findings.edema_severity >= 2 or setting_or_view in ("icu", "AP")


def image_distractors(view: str, config: SynthConfig | None = None, sick: bool = False,
                      seed: int | Sequence[int] = 0) -> tuple[str, ...]:
    """The ECG leads / oxygen tubing that :func:`render_image` draws on the image with this
    ``seed`` (drawn from the image's stream ``[*seed, 14]``; see
    :func:`radpair.data.synth.overlays.distractor_probabilities` for the rates)."""
    cfg = config or SynthConfig()
    rng = np.random.default_rng([*_seed_tuple(seed), 14])
    return choose_distractors(rng, sick, cfg.distractor_illness_link, cfg.distractor_rate, lateral=view == "LATERAL")


def render_image(anatomy: Anatomy, findings: Findings, view: str = "PA", size: int = 128, *,
                 seed: int | tuple[int, ...] = 0, detail_seed: int | tuple[int, ...] | None = None,
                 config: SynthConfig | None = None, acquisition: Acquisition | None = None,
                 sick: bool | None = None, distractors: Sequence[str] | None = None,
                 regions: RegionRecorder | None = None) -> np.ndarray:
    """Render one image (uint8, ``size`` x ``size``) with exactly the given findings.

    ``detail_seed`` fixes the study-level drawing choices (tube tips, patch textures) and
    ``seed`` the image-level ones (positioning, exposure, noise); pass the same values
    with and without a finding to see what that finding alone changes. ``acquisition``
    overrides the drawn positioning/exposure (e.g. ``Acquisition()`` for a centred film).
    ``distractors`` overrides which ECG leads / oxygen tubing are drawn (names from
    ``overlays.DISTRACTORS``); by default :func:`image_distractors` chooses them, using
    ``sick`` (default: :func:`is_sick` with the view) only when
    ``config.distractor_illness_link`` is above 0. ``regions``, when given, collects where
    each finding was drawn (see :func:`render_image_with_masks`); it never changes a pixel.
    """
    _check_size(size)
    if view not in ("PA", "AP", "LATERAL"):
        raise ValueError(f"unknown view {view!r} (valid: PA, AP, LATERAL)")
    cfg = config or SynthConfig()
    seed_t = _seed_tuple(seed)
    det_t = seed_t if detail_seed is None else _seed_tuple(detail_seed)
    detail = np.random.default_rng([*det_t, 11])
    noise = np.random.default_rng([*seed_t, 12])
    pixel_rng = np.random.default_rng([*seed_t, 13])
    acq = acquisition if acquisition is not None else sample_acquisition(noise, view, cfg.anatomy_variation)
    if distractors is None:
        if sick is None:
            sick = is_sick(findings, view)
        drawn = image_distractors(view, cfg, sick, seed_t)
    else:
        drawn = tuple(distractors)
    if view == "LATERAL":
        return _lateral(anatomy, findings, acq, size, cfg, detail, noise, pixel_rng, drawn, seed_t, regions)
    return _frontal(anatomy, findings, view, acq, size, cfg, detail, noise, pixel_rng, drawn, seed_t, regions)


def render_image_with_masks(anatomy: Anatomy, findings: Findings, view: str = "PA", size: int = 128,
                            **kwargs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`render_image` plus the (size, size) bool region of every finding it drew.

    The image is byte-identical to :func:`render_image` with the same arguments; keys are
    the channels of :data:`radpair.data.synth.masks.CHANNELS` that this image shows (a
    lateral film draws no pneumothorax, so has no pneumothorax key).
    """
    regions = RegionRecorder(size)
    image = render_image(anatomy, findings, view, size, regions=regions, **kwargs)
    return image, regions.masks()


__all__ = ["render_image", "render_image_with_masks", "image_distractors", "is_sick", "MIN_SIZE", "MAX_SIZE",
           "EFFUSION_LEVEL", "PNEUMOTHORAX_COLLAPSE", "CTR_LIMIT"]
