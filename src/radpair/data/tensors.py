"""Conversion of stored uint8 radiographs into model input tensors.

One function for every consumer (training, probing, explanation, inference) so that an
encoder always sees pixels scaled the way it was trained on.
"""

from __future__ import annotations

import numpy as np
import torch

# Fixed affine scaling to roughly zero mean / unit variance for chest radiographs stored
# as uint8; recorded in checkpoints so inference applies the same mapping.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (H, W) -> float32 (B, 1, H, W), normalised."""
    if isinstance(images, np.ndarray):
        array = np.ascontiguousarray(images)
        if not array.flags.writeable:  # a read-only memory map: torch warns about sharing it
            array = array.copy()
        t = torch.from_numpy(array)
    else:
        t = images
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim == 3:
        t = t.unsqueeze(1)
    return (t.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD
