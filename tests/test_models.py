import pytest
import torch

from radpair.errors import ConfigError, DataError
from radpair.methods import BuildContext, resolve_method_config
from radpair.methods import build_method as _build
from radpair.models import ImageEncoderConfig, TextEncoderConfig, build_image_encoder
from radpair.models.export import load_image_encoder, save_encoder_weights
from radpair.text import load_tokenizer


def MethodConfig(**kw):
    return resolve_method_config(kw)


def build_method(cfg, image_cfg, text_cfg, tok=None):
    return _build(cfg, BuildContext(image_cfg, text_cfg, tok))


@pytest.mark.parametrize("name,dim", [("resnet_tiny", 128), ("resnet18", 512), ("resnet50", 2048)])
def test_image_encoders_are_2d_single_channel(name, dim):
    enc = build_image_encoder(ImageEncoderConfig(name=name)).eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 1, 64, 64))
        fmap = enc.feature_map(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, dim)
    assert fmap.shape[:2] == (2, dim) and fmap.shape[2] == 2  # stride-2 stem + max-pool + 3 stride-2 stages


def test_encoder_export_round_trip(tmp_path):
    enc = build_image_encoder(ImageEncoderConfig(name="resnet_tiny"))
    path = save_encoder_weights(enc, tmp_path / "enc.safetensors", {"config": {"image_encoder": {"name": "resnet_tiny"}}})
    again = load_image_encoder(path)
    for (k, a), (_, b) in zip(enc.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(DataError, match="do not fit"):
        other = build_image_encoder(ImageEncoderConfig(name="resnet18"))
        from radpair.models.export import load_encoder_weights

        load_encoder_weights(other, path)


def test_convirt_forward_contract_and_frozen_text(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    model = build_method(
        MethodConfig(name="convirt", projection_dim=16),
        ImageEncoderConfig(name="resnet_tiny"),
        TextEncoderConfig(tokenizer=str(tokenizer_dir), hidden_size=32, num_heads=2, num_layers=1,
                          intermediate_size=64, freeze=True),
        tok,
    )
    enc = tok(["mild pulmonary edema", "no pulmonary edema"] * 2, padding=True, return_tensors="pt")
    batch = {"images": torch.randn(4, 1, 64, 64), "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    frozen_before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(batch)
    assert set(out) >= {"loss", "loss_components"} and out["loss"].ndim == 0
    out["loss"].backward()
    opt.step()
    for k, v in model.text_encoder.state_dict().items():
        assert torch.equal(v, frozen_before[k]), f"frozen text encoder changed: {k}"
    assert all(p.grad is None for p in model.text_encoder.parameters())


def test_supervised_needs_labels_and_masks_missing():
    with pytest.raises(ConfigError, match="method.labels"):
        MethodConfig(name="supervised")
    model = build_method(
        MethodConfig(name="supervised", labels=["a", "b"]), ImageEncoderConfig(name="resnet_tiny"), TextEncoderConfig()
    )
    batch = {
        "images": torch.randn(3, 1, 64, 64),
        "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        "label_mask": torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]),
    }
    out = model(batch)
    out["loss"].backward()
    assert model.classifier.weight.grad[1].abs().sum() == 0  # a fully masked class gets no gradient


def test_unknown_method_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'convirt'"):
        MethodConfig(name="convrit")
    with pytest.raises(ConfigError, match="did you mean 'method.temperature'"):
        MethodConfig(name="convirt", temprature=0.2)
