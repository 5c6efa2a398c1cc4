"""Frozen-encoder feature extraction for linear probing.

Probing many label budgets and repeats re-uses one forward pass per image, so features
are computed once here and everything downstream works on a small (N, D) array.

Pixels go through :func:`radpair.data.tensors.images_to_tensor`, the one conversion the
encoder was trained with. The encoder is put in eval mode (batch-norm running stats,
no dropout) and its previous training mode is restored afterwards, so calling this in the
middle of training does not silently freeze batch-norm for the rest of the run.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from radpair.data.tensors import images_to_tensor
from radpair.errors import DataError


def _single_device(module: torch.nn.Module) -> torch.device | None:
    devices = {p.device for p in module.parameters()} | {b.device for b in module.buffers()}
    return next(iter(devices)) if len(devices) == 1 else None


@contextlib.contextmanager
def frozen_eval(module: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """Eval mode (and ``device``) for the duration; the caller's state comes back after.

    Per-submodule modes are restored individually, since a training loop may keep some
    parts (e.g. a frozen backbone) in eval mode on purpose.
    """
    modes = [(m, m.training) for m in module.modules()]
    original = _single_device(module)
    moved = original is not None and original != device
    try:
        if moved:
            module.to(device)
        module.eval()
        yield module
    finally:
        for m, mode in modes:
            m.train(mode)
        if moved:
            module.to(original)


def _as_features(out: object) -> torch.Tensor:
    """Encoder output -> (B, D). Spatial maps (B, D, h, w) are average-pooled."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise DataError(f"encoder returned {type(out).__name__}; expected a tensor of shape (B, D)")
    if out.ndim > 2:
        out = out.flatten(2).mean(-1)
    if out.ndim != 2:
        raise DataError(f"encoder returned shape {tuple(out.shape)}; expected (B, D)")
    return out


def _progress(total: int, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import Progress

    return Progress(transient=True)


def extract_features(
    encoder: torch.nn.Module,
    images: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    indices: Sequence[int] | np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed uint8 images (N, H, W) -> float32 (N, D) with a frozen encoder.

    ``images`` may be a memory map; only one batch is read into memory at a time.
    ``indices`` selects rows (e.g. one split) without copying the whole array. If the
    encoder's parameters live on one device other than ``device`` it is moved there and
    moved back afterwards. With no rows the result is (0, 0): D is unknown without a
    forward pass.
    """
    if images.ndim != 3:
        raise DataError(f"images must be (N, H, W) uint8; got shape {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 as stored in a corpus; got {images.dtype}")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1; got {batch_size}")
    rows = np.arange(images.shape[0]) if indices is None else np.asarray(indices, dtype=np.int64)
    dev = torch.device(device)
    chunks: list[np.ndarray] = []
    with frozen_eval(encoder, dev), torch.inference_mode(), _progress(rows.size, progress) as bar:
        task = bar.add_task("extracting features", total=rows.size) if bar is not None else None
        for start in range(0, rows.size, batch_size):
            batch_rows = rows[start : start + batch_size]
            batch = images[batch_rows]
            x = images_to_tensor(batch).to(dev, non_blocking=True)
            feats = _as_features(encoder(x))
            chunks.append(feats.float().cpu().numpy())
            if bar is not None:
                bar.advance(task, batch_rows.size)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks, axis=0).astype(np.float32, copy=False)
