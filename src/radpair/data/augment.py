"""Training-time augmentation of whole batches, on whatever device the batch lives.

Per-sample PIL/torchvision transforms in a DataLoader cost more than reading the cache;
here one ``affine_grid``/``grid_sample`` call applies rotation, translation, (optional)
zoom and a random crop to the whole (B, C, H, W) batch, and intensity jitter is a few
tensor ops. Scale is kept constant by default, as in RadTex (random affine "keeping the
scale of the image constant"); Chauhan et al. translate, rotate and crop.

Randomness comes only from the ``torch.Generator`` passed in, and every parameter is drawn
in a fixed order whatever is enabled, so a (seed, step) pair always gives the same batch
and turning one augmentation off does not change the draws of the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from radpair.data.tensors import PIXEL_MEAN, PIXEL_STD
from radpair.errors import ConfigError


@dataclass
class AugmentConfig:
    """Ranges of the random transforms; every range is symmetric around "no change"."""

    enabled: bool = True
    p: float = 1.0  # probability that a sample is augmented at all
    rotate_deg: float = 10.0  # rotation uniform in [-rotate_deg, rotate_deg]
    translate: float = 0.05  # shift uniform in [-t, t] x image side, per axis
    scale: float = 0.0  # zoom uniform in [1 - scale, 1 + scale]; 0 keeps scale constant
    crop: float = 1.0  # random crop keeping this fraction of each side (1.0: no crop)
    output_size: int | None = None  # side of the output; None: same as the input
    brightness: float = 0.1  # additive shift in [-b, b] on [0, 1] intensities
    contrast: float = 0.1  # factor in [1 - c, 1 + c] around each image's mean
    gamma: float = 0.1  # gamma log-uniform in [exp(-g), exp(g)]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"augment.p must be in [0, 1], got {self.p}")
        if not 0.0 < self.crop <= 1.0:
            raise ConfigError(f"augment.crop must be in (0, 1], got {self.crop}")
        if not 0.0 <= self.scale < 1.0:
            raise ConfigError(f"augment.scale must be in [0, 1), got {self.scale}")
        if not 0.0 <= self.contrast < 1.0:
            raise ConfigError(f"augment.contrast must be in [0, 1), got {self.contrast}")
        for name in ("rotate_deg", "translate", "brightness", "gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} must be >= 0, got {getattr(self, name)}")
        if self.output_size is not None and self.output_size < 1:
            raise ConfigError(f"augment.output_size must be positive, got {self.output_size}")

    @property
    def geometric(self) -> bool:
        return bool(self.rotate_deg or self.translate or self.scale or self.crop < 1.0 or self.output_size)


class BatchAugment:
    """``BatchAugment(cfg)(images, generator)``: (B, C, H, W) normalised float -> same.

    Inputs are normalised as by :func:`radpair.data.tensors.images_to_tensor`; the
    transforms run on [0, 1] intensities (so padding is black and gamma is defined) and
    the result is normalised again.
    """

    def __init__(self, cfg: AugmentConfig, pixel_mean: float = PIXEL_MEAN, pixel_std: float = PIXEL_STD) -> None:
        self.cfg = cfg
        self.pixel_mean = float(pixel_mean)
        self.pixel_std = float(pixel_std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if not cfg.enabled:
            return images
        if images.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        b = images.shape[0]
        dev, in_dtype = images.device, images.dtype

        def uniform(lo: float, hi: float) -> torch.Tensor:
            u = torch.rand(b, generator=generator, device=generator.device, dtype=torch.float32)
            return (u * (hi - lo) + lo).to(dev)

        # fixed draw order: apply, angle, tx, ty, zoom, crop x, crop y, brightness, contrast, gamma
        apply = (uniform(0.0, 1.0) < cfg.p).float()
        angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180.0) * apply
        tx = uniform(-cfg.translate, cfg.translate) * apply
        ty = uniform(-cfg.translate, cfg.translate) * apply
        zoom = 1.0 + uniform(-cfg.scale, cfg.scale) * apply
        cx = uniform(-1.0, 1.0) * apply
        cy = uniform(-1.0, 1.0) * apply
        shift = uniform(-cfg.brightness, cfg.brightness) * apply
        factor = 1.0 + uniform(-cfg.contrast, cfg.contrast) * apply
        gamma = torch.exp(uniform(-cfg.gamma, cfg.gamma) * apply)

        x = images.float()
        std, mean = self.pixel_std, self.pixel_mean
        if cfg.brightness or cfg.contrast:
            # un-normalise, contrast around each image's mean and brightness in one pass:
            # y = (u - m) * f + m + s with u = x * std + mean
            m = x.mean(dim=(1, 2, 3)) * std + mean
            scale = (std * factor).view(b, 1, 1, 1)
            offset = (mean * factor + m * (1.0 - factor) + shift).view(b, 1, 1, 1)
            x = torch.addcmul(offset, x, scale)
        else:
            x = x * std + mean
        x.clamp_(0.0, 1.0)
        if cfg.gamma:
            x.pow_(gamma.view(b, 1, 1, 1))
        if cfg.geometric:
            x = self._geometry(x, angle, tx, ty, zoom, cx, cy)
        return x.sub_(mean).div_(std).to(in_dtype)

    def _geometry(self, x: torch.Tensor, angle, tx, ty, zoom, cx, cy) -> torch.Tensor:
        """Map each output pixel to its input position with one affine per sample.

        In normalised coordinates (align_corners=False) the crop window has half-size
        ``crop`` and its centre moves within the image; rotation is done in pixel units
        (hence the H/W factors) so non-square images are not sheared.
        """
        b, c, h, w = x.shape
        k = self.cfg.crop / zoom
        cos, sin = torch.cos(angle), torch.sin(angle)
        offset_x = cx * (1.0 - self.cfg.crop) - 2.0 * tx
        offset_y = cy * (1.0 - self.cfg.crop) - 2.0 * ty
        theta = torch.stack(
            [
                torch.stack([k * cos, -k * sin * (h / w), offset_x], dim=1),
                torch.stack([k * sin * (w / h), k * cos, offset_y], dim=1),
            ],
            dim=1,
        )
        out_h = out_w = self.cfg.output_size if self.cfg.output_size else None
        size = (b, c, out_h or h, out_w or w)
        grid = F.affine_grid(theta, list(size), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
