"""ONNX export of the image model: (B, 1, S, S) float images -> (B, O) probabilities.

The graph includes the head, the temperature and the constant columns, so a runtime
without radpair computes what ``radpair predict`` reports. Preprocessing (decoding,
windowing, resizing, pixel scaling) stays outside the graph, as ``preprocessing.json``
describes it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radpair.errors import ConfigError

OPSET = 18


class _Probabilities(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def export_onnx(model: nn.Module, size: int, path: Path, check: bool = True) -> dict[str, Any]:
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter's translator
    except ImportError:
        raise ConfigError("--onnx needs the onnx extra: pip install 'radpair[onnx]'") from None
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, 1, size, size, generator=gen)
    wrapped = _Probabilities(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example,), str(path), input_names=["images"], output_names=["probabilities"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True, external_data=False,
                          opset_version=OPSET, verbose=False)
    info: dict[str, Any] = {"file": path.name, "input": "images (batch, 1, %d, %d) float32" % (size, size),
                            "output": "probabilities (batch, n_outputs)", "opset": OPSET,
                            "torch": torch.__version__, "max_abs_diff_vs_torch": None}
    if check:
        try:
            import onnxruntime as ort
        except ImportError:
            return info
        x = torch.randn(3, 1, size, size, generator=gen)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"images": x.numpy()})[0]
        with torch.inference_mode():
            want = model(x).numpy()
        info["max_abs_diff_vs_torch"] = float(abs(got - want).max())
    return info
