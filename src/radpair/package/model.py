"""The packaged image model: image in, probabilities (and pooled features) out.

Every kind of downstream model a package can hold (an encoder with a linear or TIMNet head
from a transfer cell, or a method's own image classifier) is wrapped in one module with
one contract, so prediction, ONNX export, Grad-CAM and the feature statistics never ask
which kind they hold. Temperature and constant columns are buffers of the module, so the
ONNX graph and the torch model compute the very same probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from radpair.errors import ConfigError, DataError

EPS = 1e-7


class StandardisedLinear(nn.Module):
    """``(features - mean) / scale`` then a linear map: the linear protocol and the linear
    frozen head standardise features before the map; a fine-tuned head has mean 0, scale 1."""

    def __init__(self, in_features: int, n_outputs: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        self.linear = nn.Linear(in_features, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.scale)


class PackagedModel(nn.Module):
    """Base: ``forward(images) -> probabilities`` (B, O); ``predict(images) -> (probs, pooled
    features)``. Subclasses give ``logits_and_features``."""

    def __init__(self, n_outputs: int, categorical: bool) -> None:
        super().__init__()
        self.categorical = bool(categorical)
        self.n_outputs = int(n_outputs)
        self.register_buffer("temperature", torch.ones(1))
        # outputs the training subset could not fit predict a constant (the linear protocol)
        self.register_buffer("constant_mask", torch.zeros(n_outputs))
        self.register_buffer("constant_value", torch.zeros(n_outputs))

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(images)[0]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits.float() / self.temperature
        p = torch.softmax(z, dim=-1) if self.categorical else torch.sigmoid(z)
        p = p * (1 - self.constant_mask) + self.constant_value * self.constant_mask
        if self.categorical:
            p = p / p.sum(dim=-1, keepdim=True)
        return p

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z, features = self.logits_and_features(images)
        return self.probabilities(z), features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)[0]

    def cam_layer(self) -> str:
        """Grad-CAM's target: the encoder's last convolutional stage (after its residual
        addition), else the last convolution. The last ``Conv2d`` by registration order can
        be a 1x1 shortcut projection, whose map shows the block's input, not its output."""
        names = [n for n, _ in self.named_modules()]
        stages = [n for n in names if n.endswith("trunk.layer4")]
        if stages:
            return stages[-1]
        convs = [n for n, m in self.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ConfigError("the packaged model has no convolution layer for Grad-CAM")
        return convs[-1]


class EncoderHeadModel(PackagedModel):
    """A transfer cell's model: image encoder, then a head on pooled features or the map."""

    def __init__(self, encoder: nn.Module, head: nn.Module, head_input: str, n_outputs: int, categorical: bool) -> None:
        super().__init__(n_outputs, categorical)
        if head_input not in ("pooled", "map"):
            raise ConfigError(f"head input must be 'pooled' or 'map', got {head_input!r}")
        self.encoder = encoder
        self.head = head
        self.head_input = head_input

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.encoder.feature_map(images)
        pooled = fmap.mean(dim=(2, 3))
        return self.head(fmap if self.head_input == "map" else pooled), pooled


class MethodModel(PackagedModel):
    """A pretraining method that has its own image classifier (``predict(images)``, or
    ``classify_inputs(batch, "image")`` when it declares several inputs). Its logits are
    recovered from the probabilities, so temperature scaling applies the same way; the
    pooled features are the output of the image encoder the method exports."""

    def __init__(self, method: nn.Module, n_outputs: int, categorical: bool) -> None:
        super().__init__(n_outputs, categorical)
        self.method = method
        exports = method.exports() if hasattr(method, "exports") else {}
        self._encoder_name = next((n for n, m in method.named_modules() if m is exports.get("image_encoder")), None)
        self._captured: list[torch.Tensor] = []

    def _classify(self, images: torch.Tensor) -> torch.Tensor:
        declared = getattr(self.method, "classifier_inputs", None)
        if declared is not None:
            return self.method.classify_inputs({"images": images}, "image")
        if torch.is_grad_enabled():  # Grad-CAM (--cam): ``predict`` is often wrapped in no_grad for
            import inspect           # inference; its undecorated body is the same computation

            return inspect.unwrap(type(self.method).predict)(self.method, images)
        return self.method.predict(images)

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        encoder = self.method.get_submodule(self._encoder_name) if self._encoder_name else None
        captured: list[torch.Tensor] = []
        hook = encoder.register_forward_hook(lambda m, i, o: captured.append(o)) if encoder is not None else None
        try:
            p = self._classify(images).float()
        finally:
            if hook is not None:
                hook.remove()
        p = p.clamp(EPS, 1 - EPS)
        z = torch.log(p) if self.categorical else torch.log(p) - torch.log1p(-p)
        features = captured[0] if captured else None
        if features is not None and features.ndim > 2:
            features = features.flatten(2).mean(-1)
        return z, features


# ---- building from a package's config -----------------------------------------------------------
def build_model(config: dict[str, Any], root: Path) -> PackagedModel:
    """An untrained model of the architecture ``config`` describes (weights loaded by the caller)."""
    kind = config.get("kind")
    n_out, categorical = int(config["n_outputs"]), bool(config["categorical"])
    if kind == "transfer":
        from radpair.models.image_encoders import IMAGE_ENCODERS

        with torch.random.fork_rng(devices=[]):  # an initialisation we overwrite; keep the caller's RNG
            encoder = IMAGE_ENCODERS.build(config["image_encoder"]["name"])
            head_cfg = config["head"]
            if head_cfg["type"] == "linear":
                head = StandardisedLinear(int(head_cfg["in_features"]), n_out)
            elif head_cfg["type"] == "timnet":
                from radpair.transfer.heads import TimnetHead

                head = TimnetHead(int(head_cfg["in_features"]), n_out, int(head_cfg["channels"]),
                                  int(head_cfg["hidden"]))
            else:
                raise DataError(f"{root / 'config.json'}: unknown head type {head_cfg['type']!r}")
        return EncoderHeadModel(encoder, head, head_cfg["input"], n_out, categorical)
    if kind == "method":
        return MethodModel(_build_method(config, root), n_out, categorical)
    raise DataError(f"{root / 'config.json'}: unknown package kind {kind!r} (expected transfer or method)")


def _build_method(config: dict[str, Any], root: Path) -> nn.Module:
    from radpair.config import from_dict
    from radpair.methods import BuildContext, build_method, method_needs, resolve_method_config
    from radpair.models.config import ImageEncoderConfig, TextEncoderConfig

    method_cfg = resolve_method_config(config["method"], "method")
    image_cfg = from_dict(ImageEncoderConfig, config.get("image_encoder") or {}, "image_encoder")
    image_cfg.weights = None
    text_cfg = from_dict(TextEncoderConfig, config.get("text_encoder") or {}, "text_encoder")
    tok = None
    if method_needs(method_cfg).needs_text:
        from radpair.text import load_tokenizer

        folder = root / config.get("tokenizer", "tokenizer")
        tok = load_tokenizer(folder)
        text_cfg.tokenizer = str(folder)
    with torch.random.fork_rng(devices=[]):
        model = build_method(method_cfg, BuildContext(image_cfg, text_cfg, tok))
    return model.eval()


def load_weights(model: nn.Module, path: Path) -> None:
    """Strict safetensors load (no pickle), naming the file on any mismatch."""
    from radpair.models.export import load_encoder_weights

    load_encoder_weights(model, path)


def to_probability_logits(p: Any, categorical: bool):
    """Logits that reproduce probabilities ``p`` (for temperature scaling of saved outputs)."""
    import numpy as np

    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) if categorical else np.log(p) - np.log1p(-p)


__all__ = ["EncoderHeadModel", "MethodModel", "PackagedModel", "StandardisedLinear", "build_model", "load_weights"]
