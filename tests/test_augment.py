"""Batch augmentation: determinism, identities, geometry, intensity, devices, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radpair.config import from_dict
from radpair.data.augment import AugmentConfig, BatchAugment
from radpair.data.tensors import PIXEL_MEAN, PIXEL_STD, images_to_tensor
from radpair.errors import ConfigError

OFF = dict(rotate_deg=0.0, translate=0.0, brightness=0.0, contrast=0.0, gamma=0.0)


def batch(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return images_to_tensor(rng.integers(0, 256, (n, size, size), dtype=np.uint8))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return x * PIXEL_STD + PIXEL_MEAN


def test_same_generator_state_gives_the_same_batch():
    x, aug = batch(), BatchAugment(AugmentConfig())
    a, b = aug(x, gen(7)), aug(x, gen(7))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, aug(x, gen(8)))
    g = gen(7)
    first, second = aug(x, g), aug(x, g)  # the generator advances: consecutive steps differ
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_global_rng_is_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    BatchAugment(AugmentConfig())(batch(), gen(0))
    assert torch.equal(torch.rand(3), expected)


def test_disabled_and_identity_configs_return_the_input():
    x = batch()
    assert BatchAugment(AugmentConfig(enabled=False))(x, gen(0)) is x
    assert torch.allclose(BatchAugment(AugmentConfig(**OFF))(x, gen(0)), x, atol=1e-5)
    assert torch.allclose(BatchAugment(AugmentConfig(p=0.0))(x, gen(0)), x, atol=1e-5)


def test_disabling_one_transform_keeps_the_others_draws():
    x = batch()
    rot_only = BatchAugment(AugmentConfig(**{**OFF, "rotate_deg": 15.0}))(x, gen(3))
    rot_and_brightness = BatchAugment(AugmentConfig(**{**OFF, "rotate_deg": 15.0, "brightness": 0.0}))(x, gen(3))
    assert torch.equal(rot_only, rot_and_brightness)


def test_translation_moves_content_and_pads_black():
    x01 = torch.zeros(16, 1, 32, 32)
    x01[:, :, 12:20, 12:20] = 1.0
    x = (x01 - PIXEL_MEAN) / PIXEL_STD
    out = to_unit(BatchAugment(AugmentConfig(**{**OFF, "translate": 0.2}))(x, gen(1)))
    assert out.min() >= -1e-5  # zero padding is black in [0, 1] space, not mid grey
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mass = out[:, 0].sum(dim=(1, 2))
    cx = (out[:, 0] * xs).sum(dim=(1, 2)) / mass
    cy = (out[:, 0] * ys).sum(dim=(1, 2)) / mass
    shift = torch.stack([cx - 15.5, cy - 15.5], 1)
    assert shift.abs().max() <= 0.2 * 32 + 0.5 and shift.abs().max() > 1.0
    assert torch.allclose(mass, torch.full_like(mass, 64.0), atol=1.0)  # scale kept constant


def test_rotation_turns_a_bar():
    x01 = torch.zeros(32, 1, 33, 33)
    x01[:, :, 15:18, 2:31] = 1.0  # a horizontal bar
    out = to_unit(BatchAugment(AugmentConfig(**{**OFF, "rotate_deg": 90.0}))((x01 - PIXEL_MEAN) / PIXEL_STD, gen(2)))
    vertical_extent = (out[:, 0].amax(dim=2) > 0.5).sum(dim=1)
    assert vertical_extent.max() > 15  # some samples were turned well away from horizontal
    assert vertical_extent.min() >= 2


def test_random_crop_and_output_size():
    x = batch(4, 64)
    out = BatchAugment(AugmentConfig(**{**OFF, "crop": 0.5, "output_size": 32}))(x, gen(0))
    assert out.shape == (4, 1, 32, 32)
    # an un-augmented sample (p=0) gets the centre window, pixel for pixel
    centre = BatchAugment(AugmentConfig(**{**OFF, "crop": 0.5, "output_size": 32, "p": 0.0}))(x, gen(0))
    assert torch.allclose(centre, x[:, :, 16:48, 16:48], atol=1e-5)
    assert not torch.allclose(out, centre, atol=1e-3)  # augmented samples move the window
    same = BatchAugment(AugmentConfig(**{**OFF, "crop": 0.5}))(x, gen(0))
    assert same.shape == x.shape


def test_intensity_jitter_stays_in_range():
    x = batch(32)
    out = to_unit(BatchAugment(AugmentConfig(**{**OFF, "brightness": 0.2, "contrast": 0.3, "gamma": 0.3}))(x, gen(5)))
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    delta = (out.mean(dim=(1, 2, 3)) - to_unit(x).mean(dim=(1, 2, 3))).abs()
    assert delta.max() > 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batch_with_cpu_generator_matches_cpu():
    x = batch(8, 64)
    aug = BatchAugment(AugmentConfig())
    cpu = aug(x, gen(4))
    gpu = aug(x.cuda(), gen(4))
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3)


def test_config_validation_and_typos():
    with pytest.raises(ConfigError, match="crop"):
        AugmentConfig(crop=0.0)
    with pytest.raises(ConfigError, match="augment.p"):
        AugmentConfig(p=2.0)
    cfg = from_dict(AugmentConfig, {"rotate_deg": 5, "enabled": True})
    assert cfg.rotate_deg == 5.0
    with pytest.raises(ConfigError, match="did you mean 'rotate_deg'"):
        from_dict(AugmentConfig, {"rotate_degs": 5})
