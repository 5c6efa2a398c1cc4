"""Resolution-independent drawing primitives shared by the scene and overlay painters.

Shapes are described in normalised coordinates and rasterised with soft edges at least
one pixel wide, so a structure keeps its look (up to partial-volume blurring) from 64 to
512 px. Thin structures (tubes, wires, Kerley lines, the pleural line) are splatted as
points along a polyline and blurred once, which costs O(length) instead of one
distance field per segment over the whole image.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

F32 = np.float32


@lru_cache(maxsize=16)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates on [-1, 1]^2 (x right, y down); cached per size."""
    c = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(F32)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``d < 0``: 1 well inside, 0 well outside, linear over ``width``."""
    return np.clip(F32(0.5) - d * F32(1.0 / width), F32(0.0), F32(1.0))


def bump(d: np.ndarray, width: float) -> np.ndarray:
    """A smooth ridge of half-width ``width`` centred on ``d == 0`` (peak 1)."""
    t = d * F32(1.0 / width)
    return np.clip(F32(1.0) - t * t, F32(0.0), F32(1.0))


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


def smooth_noise(seed: int, x: np.ndarray, y: np.ndarray, cells: int = 8) -> np.ndarray:
    """Band-limited noise (about unit range) as a function of position, not of pixels.

    A (cells+3)^2 lattice of normal draws, bilinearly interpolated at (x, y): the same
    seed gives the same texture at every image size and follows the patient's position.
    """
    rng = np.random.default_rng(seed)
    lattice = rng.standard_normal((cells + 3, cells + 3)).astype(F32)
    lattice = ndimage.uniform_filter(lattice, size=2, mode="nearest") * F32(1.8)
    gx = (x + F32(1.3)) * F32(cells / 2.6) + F32(1.0)
    gy = (y + F32(1.3)) * F32(cells / 2.6) + F32(1.0)
    out = ndimage.map_coordinates(lattice, [gy.ravel(), gx.ravel()], order=1, mode="nearest")
    return out.reshape(x.shape).astype(F32, copy=False)


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
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        inv = 1.0 / self.scale
        xs, ys = x0 - F32(self.dx), y0 - F32(self.dy)
        self.x = (xs * F32(c) + ys * F32(s)) * F32(inv)
        self.y = (ys * F32(c) - xs * F32(s)) * F32(inv)
        self.px = 2.0 / self.size / self.scale
        self.edge = max(0.012, self.px)
        self._lines: dict[float, np.ndarray] = {}

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Patient coordinates (n, 2) -> image coordinates (n, 2)."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        px, py = pts[:, 0], pts[:, 1]
        return np.stack([self.scale * (c * px - s * py) + self.dx, self.scale * (s * px + c * py) + self.dy], axis=1)

    # thin structures ------------------------------------------------------------------
    def polyline(self, points, amp: float, width: float = 0.012, image_coords: bool = False) -> None:
        """Queue a thin line of density ``amp`` and physical ``width`` along ``points``.

        Density is conserved across resolutions: below one pixel the line gets fainter
        (partial volume) rather than thicker.
        """
        pts = np.asarray(points, dtype=np.float64)
        if len(pts) < 2 or amp == 0.0:
            return
        if not image_coords:
            pts = self.to_image(pts)
            width = width * self.scale
        pix = 2.0 / self.size
        seg = np.hypot(*np.diff(pts, axis=0).T)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        total = cum[-1]
        if total <= 0:
            return
        ds = 0.5 * pix
        n = max(2, int(np.ceil(total / ds)) + 1)
        s = np.linspace(0.0, total, n)
        xs = np.interp(s, cum, pts[:, 0])
        ys = np.interp(s, cum, pts[:, 1])
        weight = amp * width * (total / (n - 1)) / (pix * pix)
        sigma = round(max(0.5 * width / pix, 0.55), 2)
        self._splat(xs, ys, weight, sigma)

    def ring(self, center: tuple[float, float], radius: float, amp: float, width: float = 0.01) -> None:
        t = np.linspace(0, 2 * np.pi, 33)
        pts = np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)
        self.polyline(pts, amp, width)

    def _splat(self, xs: np.ndarray, ys: np.ndarray, weight: float, sigma: float) -> None:
        n = self.size
        col = (xs + 1.0) * 0.5 * n - 0.5
        row = (ys + 1.0) * 0.5 * n - 0.5
        c0 = np.floor(col).astype(np.int64)
        r0 = np.floor(row).astype(np.int64)
        fc, fr = col - c0, row - r0
        acc = self._lines.get(sigma)
        if acc is None:
            acc = self._lines[sigma] = np.zeros(n * n, dtype=np.float64)
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0 + dr, c0 + dc
            ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
            if ok.any():
                acc += np.bincount(rr[ok] * n + cc[ok], weights=w[ok] * weight, minlength=n * n)

    def flush_lines(self) -> np.ndarray:
        """All queued thin structures, blurred to their widths, as a density image."""
        out = np.zeros((self.size, self.size), dtype=F32)
        for sigma in sorted(self._lines):
            img = self._lines[sigma].reshape(self.size, self.size)
            out += ndimage.gaussian_filter(img, sigma, mode="constant").astype(F32)
        self._lines.clear()
        return out


__all__ = ["grid", "ramp", "bump", "segment_distance", "convex_polygon_distance", "smooth_noise", "catmull_rom",
           "Frame", "F32"]
