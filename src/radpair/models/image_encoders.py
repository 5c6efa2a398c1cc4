"""Image encoders: MONAI ResNets configured for single-channel 2-D radiographs.

MONAI's defaults are 3-D, three channels and stride-1 stems (4x the compute of the usual
2-D ResNet); every preset here fixes ``spatial_dims=2, n_input_channels=1,
conv1_t_stride=2`` so that trap cannot be hit from a config.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck
from torch import nn

from radpair.models.config import ImageEncoderConfig
from radpair.registry import Registry

IMAGE_ENCODERS: Registry["ImageEncoder"] = Registry("image encoder")


class ImageEncoder(nn.Module):
    """Wraps a MONAI ResNet trunk; exposes the pooled vector and the last feature map.

    The feature map is what Grad-CAM and attention pooling need; the pooled vector is what
    linear probes and contrastive heads use.
    """

    def __init__(self, trunk: ResNet, out_dim: int, name: str) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_dim = out_dim
        self.name = name

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        x = t.act(t.bn1(t.conv1(images)))
        if not t.no_max_pool:
            x = t.maxpool(x)
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_map(images).mean(dim=(2, 3))


def _resnet(name: str, block, layers: list[int], widths: list[int]) -> ImageEncoder:
    trunk = ResNet(
        block=block,
        layers=layers,
        block_inplanes=widths,
        spatial_dims=2,
        n_input_channels=1,
        conv1_t_size=7,
        conv1_t_stride=2,
        feed_forward=False,
    )
    expansion = 4 if block is ResNetBottleneck else 1
    return ImageEncoder(trunk, widths[-1] * expansion, name)


@IMAGE_ENCODERS.register("resnet_tiny")
def resnet_tiny() -> ImageEncoder:
    """ResNet-10 at a quarter width: the CPU preset for tests and the demo."""
    return _resnet("resnet_tiny", ResNetBlock, [1, 1, 1, 1], [16, 32, 64, 128])


@IMAGE_ENCODERS.register("resnet_small")
def resnet_small() -> ImageEncoder:
    """ResNet-18 layout at half width: a stronger CPU preset."""
    return _resnet("resnet_small", ResNetBlock, [2, 2, 2, 2], [32, 64, 128, 256])


@IMAGE_ENCODERS.register("resnet18")
def resnet18() -> ImageEncoder:
    return _resnet("resnet18", ResNetBlock, [2, 2, 2, 2], [64, 128, 256, 512])


@IMAGE_ENCODERS.register("resnet34")
def resnet34() -> ImageEncoder:
    return _resnet("resnet34", ResNetBlock, [3, 4, 6, 3], [64, 128, 256, 512])


@IMAGE_ENCODERS.register("resnet50")
def resnet50() -> ImageEncoder:
    """The RadTex / ConVIRT encoder size."""
    return _resnet("resnet50", ResNetBottleneck, [3, 4, 6, 3], [64, 128, 256, 512])


def build_image_encoder(cfg: ImageEncoderConfig) -> ImageEncoder:
    encoder = IMAGE_ENCODERS.build(cfg.name)
    if cfg.weights:
        from radpair.models.export import load_encoder_weights

        load_encoder_weights(encoder, Path(cfg.weights))
    return encoder
