"""A finished report-writing run (RadTex, TieNet), loaded whole for generation.

Unlike a joint-embedding run, whose encoders alone are enough to embed, a captioning model
needs its decoder, its visual projection and the tokenizer it wrote with. All of them come
from the checkpoint of the step at which ``image_encoder.safetensors`` was exported, and
that checkpoint's image encoder must equal the export, so what generates is exactly what
was exported. Loading draws nothing from the caller's global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radpair.errors import ConfigError, DataError


@dataclass
class GenerativeRun:
    """A loaded run whose ``model`` has ``start_decoding(images)`` and ``decode_step(prefix, state)``."""

    root: Path
    config: dict[str, Any]
    model: nn.Module
    tokenizer: Any
    tokenizer_path: Path
    step: int
    checkpoint: Path
    device: torch.device
    input_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.config.get("method", {}).get("name", "?"))

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.root), "method": self.method, "step": self.step, "checkpoint": str(self.checkpoint),
                "tokenizer": str(self.tokenizer_path)}


def can_generate(model: nn.Module) -> bool:
    """Whether ``model`` writes reports: it has the decoding step interface, and (where a
    method has variants without a trained decoder) says it writes them (``writes_reports``)."""
    has_step = all(hasattr(model, name) for name in ("start_decoding", "decode_step", "bos_id", "eos_id"))
    return has_step and bool(getattr(model, "writes_reports", True))


def load_generative_run(run_dir: str | Path, tokenizer: str | Path | None = None,
                        device: str | torch.device = "cpu") -> GenerativeRun:
    """Rebuild the run's method from its config and load the whole model from its checkpoint."""
    from radpair.evaluation.joint import IMAGE_WEIGHTS, _checkpoint_of_step, _tokenizer_path, run_parts
    from radpair.methods import BuildContext, build_method
    from radpair.models.export import read_safetensors_metadata
    from radpair.text import load_tokenizer

    root, config, method_cfg, image_cfg, text_cfg = run_parts(run_dir)
    export = root / IMAGE_WEIGHTS
    if not export.is_file():
        raise DataError(f"{root}: no {IMAGE_WEIGHTS} (written when `radpair pretrain` finishes); is the run finished?")
    try:
        meta = read_safetensors_metadata(export)
    except Exception as exc:  # noqa: BLE001 - a corrupt header; name the file
        raise DataError(f"{export}: cannot read its export metadata ({exc})") from None
    if "step" not in meta:
        raise DataError(f"{export}: export metadata has no 'step', so the checkpoint holding the decoder is unknown")
    tok_path = _tokenizer_path(root, config, tokenizer)
    tok = load_tokenizer(tok_path)
    with torch.random.fork_rng(devices=[]):  # building draws an initialisation we then overwrite
        model = build_method(method_cfg, BuildContext(image_cfg, text_cfg, tok))
    if not can_generate(model):
        raise ConfigError(f"{root}: method {method_cfg.name!r} writes no reports (it has no decoder); "
                          "generation needs a captioning method such as radtex_captioning or tienet")
    step = int(meta["step"])
    ckpt = _checkpoint_of_step(root, step)
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    except Exception as exc:  # truncated zip, missing key, bad pickle opcode
        raise DataError(f"{ckpt}: not a readable radpair checkpoint ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(saved, strict=True)
    except RuntimeError as exc:
        why = str(exc).splitlines()[-1].strip() or str(exc).splitlines()[0]
        raise DataError(f"{ckpt}: does not fit the run's config or tokenizer {tok_path} ({why})") from None
    from safetensors.torch import load_file

    exported = load_file(str(export))
    own = model.image_encoder.state_dict()
    if any(k not in own or not torch.equal(own[k], v.to(own[k].dtype)) for k, v in exported.items()):
        raise DataError(f"{ckpt}: its image encoder differs from {export}; the export and the checkpoint belong "
                        "to different runs")
    dev = torch.device(device)
    model.to(dev).eval()
    return GenerativeRun(root=root, config=config, model=model, tokenizer=tok, tokenizer_path=tok_path, step=step,
                         checkpoint=ckpt, device=dev, input_meta=meta)
