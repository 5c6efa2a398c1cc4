"""Grad-CAM overlays for ``radpair predict --cam``.

MONAI's ``GradCAM`` on the last convolution of the packaged model, for each image's
highest-scoring output (``GradCAMpp`` is not used: it fails for batches larger than one).
The map is taken on the logits, not the probabilities, so a saturated sigmoid does not
flatten the gradients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from radpair.models.isolation import model_left_as_found


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.logits(images)


class CamWriter:
    def __init__(self, pkg, folder: Path, device: torch.device) -> None:
        from monai.visualize import GradCAM

        self.pkg = pkg
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.module = _Logits(pkg.model)
        self.layer = "model." + pkg.model.cam_layer()
        self.hooked = pkg.model.get_submodule(pkg.model.cam_layer())
        self._gradcam = GradCAM
        self.count = 0

    def write(self, batch, ok: list[int], probs: np.ndarray) -> dict[int, str]:
        """PNG overlays of ``batch[ok]``; returns ``{batch position: file path}``."""
        x = self.pkg.preprocessing.to_tensor(np.stack([batch[k].image for k in ok])).to(self.device)
        top = probs.argmax(axis=1)
        # a GradCAM per batch, its hooks removed after: the package's model may outlive predict
        with model_left_as_found(self.pkg.model, self.hooked), torch.enable_grad():
            cam = self._gradcam(nn_module=self.module, target_layers=self.layer)
            maps = cam(x, class_idx=torch.as_tensor(top)).detach().cpu().numpy()[:, 0]
        out = {}
        for j, k in enumerate(ok):
            self.count += 1
            name = f"{self.count:06d}_{_safe(Path(batch[k].path).stem)}_{_safe(self.pkg.class_names[top[j]])}.png"
            path = self.folder / name
            overlay(batch[k].image, maps[j], path)
            out[k] = str(path)
        return out


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:60]


def overlay(image: np.ndarray, cam: np.ndarray, path: Path, alpha: float = 0.4) -> Path:
    from matplotlib import colormaps
    from PIL import Image

    cam = np.asarray(cam, dtype=np.float32)
    lo, hi = float(cam.min()), float(cam.max())
    cam = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    if cam.shape != image.shape:
        cam = np.asarray(Image.fromarray(cam, mode="F").resize(image.shape[::-1], Image.Resampling.BILINEAR))
    heat = colormaps["jet"](cam)[..., :3]
    grey = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    rgb = np.clip((1 - alpha) * grey + alpha * heat, 0, 1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path
