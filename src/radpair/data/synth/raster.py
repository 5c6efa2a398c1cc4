"""Resolution-independent drawing primitives shared by the scene and overlay painters.

Shapes are described in normalised coordinates and rasterised with soft edges at least
one pixel wide, so a structure keeps its look (up to partial-volume blurring) from 64 to
512 px. Thin structures (tubes, wires, Kerley lines, the pleural line) are splatted as
points along a polyline and blurred once, which costs O(length) instead of one
distance field per segment over the whole image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage

F32 = np.float32
_clip = np._core.umath.clip if hasattr(np, "_core") else np.core.umath.clip  # the ufunc: no wrapper overhead


@lru_cache(maxsize=16)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates on [-1, 1]^2 (x right, y down); cached per size."""
    c = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(F32)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def clip(x: np.ndarray, lo, hi) -> np.ndarray:
    """``np.clip`` without its Python wrapper (it is called hundreds of times per image)."""
    if lo is None:
        return np.minimum(x, hi)
    if hi is None:
        return np.maximum(x, lo)
    return _clip(x, lo, hi)


def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``d < 0``: 1 well inside, 0 well outside, linear over ``width``."""
    return _clip(F32(0.5) - d * F32(1.0 / width), F32(0.0), F32(1.0))


def bump(d: np.ndarray, width: float) -> np.ndarray:
    """A smooth ridge of half-width ``width`` centred on ``d == 0`` (peak 1)."""
    t = d * F32(1.0 / width)
    return _clip(F32(1.0) - t * t, F32(0.0), F32(1.0))


def segment_distance(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    """Euclidean distance of every pixel to the segment p0-p1."""
    ax, ay = p0
    bx, by = p1
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy or 1e-12
    t = np.clip(((x - F32(ax)) * F32(dx) + (y - F32(ay)) * F32(dy)) * F32(1.0 / ll), F32(0.0), F32(1.0))
    ex = x - F32(ax) - t * F32(dx)
    ey = y - F32(ay) - t * F32(dy)
    return np.sqrt(ex * ex + ey * ey)


def convex_polygon_distance(x: np.ndarray, y: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """Approximate signed distance to a convex polygon given counter-clockwise or clockwise.

    The maximum of the edge half-plane distances: exact inside and near edges, which
    is all a soft mask needs.
    """
    pts = np.asarray(vertices, dtype=np.float64)
    cx, cy = pts.mean(axis=0)
    out = None
    for i in range(len(pts)):
        ax, ay = pts[i]
        bx, by = pts[(i + 1) % len(pts)]
        nx, ny = by - ay, -(bx - ax)
        norm = np.hypot(nx, ny) or 1e-12
        nx, ny = nx / norm, ny / norm
        if (cx - ax) * nx + (cy - ay) * ny > 0:  # make the normal point outwards
            nx, ny = -nx, -ny
        d = (x - F32(ax)) * F32(nx) + (y - F32(ay)) * F32(ny)
        out = d if out is None else np.maximum(out, d)
    return out


def _hat_matrix(coords: np.ndarray, m: int) -> np.ndarray:
    """Linear-interpolation weights (len(coords), m) of 1-D lattice positions."""
    j = np.arange(m, dtype=F32)
    return np.clip(F32(1.0) - np.abs(coords[:, None] - j[None, :]), 0, 1).astype(F32)


def smooth_noise(seed: int, frame: "Frame", cells: int = 8) -> np.ndarray:
    """Band-limited noise (about unit range) as a function of patient position.

    A (cells+3)^2 lattice of normal draws, lightly smoothed and bilinearly interpolated.
    The same seed gives the same texture at every image size and it follows the
    patient's shift and magnification. Interpolation is separable (two small matrix
    products), which ignores the few degrees of patient rotation: cheap, and textures
    are random anyway.
    """
    rng = np.random.default_rng(seed)
    m = cells + 3
    lattice = rng.standard_normal((m, m)).astype(F32)
    lattice = ndimage.uniform_filter(lattice, size=2, mode="nearest") * F32(1.8)
    c = ((np.arange(frame.size, dtype=np.float64) + 0.5) / frame.size * 2.0 - 1.0)
    cx = (c - frame.dx) / frame.scale
    cy = (c - frame.dy) / frame.scale
    gx = np.clip((cx + 1.3) * (cells / 2.6) + 1.0, 0, m - 1.001).astype(F32)
    gy = np.clip((cy + 1.3) * (cells / 2.6) + 1.0, 0, m - 1.001).astype(F32)
    return _hat_matrix(gy, m) @ lattice @ _hat_matrix(gx, m).T


def catmull_rom(points: list[tuple[float, float]], per_segment: int = 8) -> np.ndarray:
    """A smooth curve through control points (endpoints included), as an (n, 2) array."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        return p
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(p[-2][None, :])
    return np.vstack(out)


def fast_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with a short kernel built from array slices.

    For the sub-2-pixel blurs used here this is several times faster than
    ``scipy.ndimage.gaussian_filter``; larger blurs fall back to scipy. Zero padding.
    """
    if sigma <= 0:
        return img
    r = int(math.ceil(2.5 * sigma))
    if r > 4:
        return ndimage.gaussian_filter(img, sigma, mode="constant", truncate=2.5)
    k = np.exp(-0.5 * (np.arange(r + 1) / sigma) ** 2)
    k = (k / (k[0] + 2.0 * k[1:].sum())).astype(img.dtype)
    out = img * k[0]
    for j in range(1, r + 1):
        out[j:, :] += img[:-j, :] * k[j]
        out[:-j, :] += img[j:, :] * k[j]
    tmp = out
    out = tmp * k[0]
    for j in range(1, r + 1):
        out[:, j:] += tmp[:, :-j] * k[j]
        out[:, :-j] += tmp[:, j:] * k[j]
    return out


def ring_segments(centers: np.ndarray, radius: float, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Segment endpoints (p0, p1) approximating circles around ``centers`` (k, 2)."""
    t = np.linspace(0, 2 * np.pi, n + 1)
    ring = np.stack([np.cos(t), np.sin(t)], axis=1) * radius
    pts = np.asarray(centers, dtype=np.float64)[:, None, :] + ring[None, :, :]
    return pts[:, :-1].reshape(-1, 2), pts[:, 1:].reshape(-1, 2)


def densify(p0, p1, amps, width, size: int, spacing: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample segments every ``spacing`` px for splatting: (points, weights, blur sigma per point).

    A point's weight makes the splatted line carry ``amp * width`` of density across its
    width, so lines keep their integrated density at every resolution (partial volume).
    Pure function of its inputs, so callers can cache it (e.g. a patient's vessel tree).
    """
    p0 = np.asarray(p0, dtype=np.float64).reshape(-1, 2)
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1, 2)
    k = len(p0)
    width = np.broadcast_to(np.asarray(width, dtype=np.float64), (k,))
    amps = np.broadcast_to(np.asarray(amps, dtype=np.float64), (k,))
    pix = 2.0 / size
    d = p1 - p0
    seg = np.sqrt((d * d).sum(axis=1))
    counts = np.maximum(1, np.ceil(seg / (spacing * pix)).astype(np.int64))
    idx = np.repeat(np.arange(k), counts)
    start = np.cumsum(counts) - counts
    t = (np.arange(idx.size) - start[idx] + 0.5) / counts[idx]
    pts = p0[idx] + d[idx] * t[:, None]
    w = (amps * width * (seg / counts) / (pix * pix))[idx]
    # blur classes in quarter-pixel steps; up to ~0.6 px is left to the bilinear splat itself
    sig = (np.round(np.maximum(0.5 * width / pix, 0.55) * 4.0) / 4.0)[idx]
    return pts, w, sig


class Frame:
    """The pixel grid of one image expressed in the patient's coordinates.

    ``x, y`` are patient coordinates of every pixel (positioning shift, rotation and
    magnification applied), ``px`` is the pixel pitch in patient units and ``edge`` the
    softest edge a boundary gets (one pixel, or finer detail at high resolution).
    """

    def __init__(self, size: int, dx: float = 0.0, dy: float = 0.0, rotation: float = 0.0, scale: float = 1.0):
        self.size = int(size)
        self.dx, self.dy, self.rotation, self.scale = float(dx), float(dy), float(rotation), float(scale)
        x0, y0 = grid(self.size)
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        self._cos, self._sin = c, s
        inv = 1.0 / self.scale
        xs, ys = x0 - F32(self.dx), y0 - F32(self.dy)
        self.x = (xs * F32(c) + ys * F32(s)) * F32(inv)
        self.y = (ys * F32(c) - xs * F32(s)) * F32(inv)
        self.px = 2.0 / self.size / self.scale
        self.edge = max(0.012, self.px)
        self._lines: dict[tuple[str, float], list] = {}
        self._pending: dict[str, list] = {}

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Patient coordinates (n, 2) -> image coordinates (n, 2)."""
        c, s = self._cos, self._sin
        px, py = pts[:, 0], pts[:, 1]
        return np.stack([self.scale * (c * px - s * py) + self.dx, self.scale * (s * px + c * py) + self.dy], axis=1)

    def box(self, points, margin: float) -> tuple[slice, slice] | None:
        """Pixel slices covering patient-space ``points`` plus ``margin`` (None if off-image).

        Lets a painter compute a distance field only where a small structure can be.
        Plain Python on purpose: for a handful of points numpy's call overhead dominates.
        """
        pts = [(float(p[0]), float(p[1])) for p in points]
        x0 = min(p[0] for p in pts) - margin
        x1 = max(p[0] for p in pts) + margin
        y0 = min(p[1] for p in pts) - margin
        y1 = max(p[1] for p in pts) + margin
        c, s, k = self._cos, self._sin, self.scale
        xs, ys = [], []
        for px_, py_ in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
            xs.append(k * (c * px_ - s * py_) + self.dx)
            ys.append(k * (s * px_ + c * py_) + self.dy)
        n = self.size
        c0 = max(int(math.floor((min(xs) + 1.0) * 0.5 * n)) - 1, 0)
        c1 = min(int(math.ceil((max(xs) + 1.0) * 0.5 * n)) + 1, n)
        r0 = max(int(math.floor((min(ys) + 1.0) * 0.5 * n)) - 1, 0)
        r1 = min(int(math.ceil((max(ys) + 1.0) * 0.5 * n)) + 1, n)
        if r1 <= r0 or c1 <= c0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def capsule(self, p0, p1, radius: float, edge: float | None = None):
        """(slices, soft mask) of a rounded bar from p0 to p1, computed inside its box only."""
        edge = self.edge if edge is None else max(edge, self.px)
        sl = self.box([p0, p1], radius + edge)
        if sl is None:
            return None, None
        d = segment_distance(self.x[sl], self.y[sl], p0, p1)
        return sl, ramp(d - F32(radius), edge)

    def polygon(self, vertices, edge: float | None = None):
        """(slices, soft mask) of a convex polygon, computed inside its box only."""
        edge = self.edge if edge is None else max(edge, self.px)
        sl = self.box(vertices, edge)
        if sl is None:
            return None, None
        return sl, ramp(convex_polygon_distance(self.x[sl], self.y[sl], vertices), edge)

    # thin structures ------------------------------------------------------------------
    def polyline(self, points, amp: float, width: float = 0.012, layer: str = "overlay") -> None:
        """Queue a thin line of density ``amp`` and physical ``width`` along ``points``.

        Density is conserved across resolutions: below one pixel the line gets fainter
        (partial volume) rather than thicker. Queued lines are rasterised together at
        :meth:`flush_lines`, which keeps the per-line cost to a list append.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 2 or amp == 0.0:
            return
        self.segments(pts[:-1], pts[1:], amp, width, layer)

    def segments(self, p0, p1, amps, width, layer: str = "overlay") -> None:
        """Queue straight segments (patient coordinates); ``amps``/``width`` scalar or per segment."""
        p0 = np.asarray(p0, dtype=np.float64).reshape(-1, 2)
        p1 = np.asarray(p1, dtype=np.float64).reshape(-1, 2)
        k = len(p0)
        if k == 0:
            return
        amps = np.broadcast_to(np.asarray(amps, dtype=np.float64), (k,))
        width = np.broadcast_to(np.asarray(width, dtype=np.float64), (k,))
        self._pending.setdefault(layer, []).append((p0, p1, amps, width))

    def ring(self, center: tuple[float, float], radius: float, amp: float, width: float = 0.01,
             layer: str = "overlay") -> None:
        q0, q1 = ring_segments(np.array([center]), radius)
        self.segments(q0, q1, amp, width, layer=layer)

    def splat_points(self, pts: np.ndarray, weights: np.ndarray, sigmas: np.ndarray, layer: str) -> None:
        """Queue densified samples given in patient coordinates (see :func:`densify`)."""
        img = self.to_image(pts)
        for sigma in np.unique(sigmas):
            sel = sigmas == sigma
            self._splat(img[sel, 0], img[sel, 1], weights[sel], float(sigma), layer)

    def _splat(self, xs: np.ndarray, ys: np.ndarray, weight: np.ndarray, sigma: float, layer: str) -> None:
        """Queue bilinear splats; one bincount per layer happens at flush time."""
        n = self.size
        col = (xs + 1.0) * (0.5 * n) - 0.5
        row = (ys + 1.0) * (0.5 * n) - 0.5
        ok = (col >= 0) & (col < n - 1) & (row >= 0) & (row < n - 1)
        col, row, weight = col[ok], row[ok], weight[ok]
        c0 = col.astype(np.int64)
        r0 = row.astype(np.int64)
        fc, fr = col - c0, row - r0
        base = r0 * n + c0
        idx = np.concatenate([base, base + 1, base + n, base + n + 1])
        a, b = weight * (1 - fr), weight * fr
        wts = np.concatenate([a * (1 - fc), a * fc, b * (1 - fc), b * fc])
        self._lines.setdefault((layer, sigma), []).append((idx, wts))

    def flush_lines(self, layer: str = "overlay") -> np.ndarray:
        """The queued thin structures of ``layer``, blurred to their widths, as density.

        Structures at most ~0.6 px wide are left to the bilinear splat (cheap); wider
        ones get the extra blur they need.
        """
        pending = self._pending.pop(layer, None)
        if pending:
            p0 = self.to_image(np.concatenate([q[0] for q in pending]))
            p1 = self.to_image(np.concatenate([q[1] for q in pending]))
            amps = np.concatenate([q[2] for q in pending])
            width = np.concatenate([q[3] for q in pending]) * self.scale
            pts, wts, sig = densify(p0, p1, amps, width, self.size)
            for sigma in np.unique(sig):
                sel = sig == sigma
                self._splat(pts[sel, 0], pts[sel, 1], wts[sel], float(sigma), layer)
        n = self.size
        out = np.zeros((n, n), dtype=F32)
        keys = sorted(k for k in self._lines if k[0] == layer)
        for key in keys:
            parts = self._lines.pop(key)
            idx = np.concatenate([p[0] for p in parts])
            wts = np.concatenate([p[1] for p in parts])
            acc = np.bincount(idx, weights=wts, minlength=n * n).astype(F32).reshape(n, n)
            extra = float(np.sqrt(max(key[1] ** 2 - 0.55 ** 2, 0.0)))
            out += fast_blur(acc, extra) if extra > 0.2 else acc
        return out


__all__ = ["grid", "clip", "ramp", "bump", "segment_distance", "convex_polygon_distance", "smooth_noise", "catmull_rom",
           "ring_segments", "densify", "fast_blur",
           "Frame", "F32"]
