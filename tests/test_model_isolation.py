"""radpair.models.isolation: MONAI's GradCAM, run inside ``model_left_as_found``, leaves
every submodule's mode and no hook behind (MONAI itself does neither)."""

from __future__ import annotations

import torch
from torch import nn

from radpair.models.isolation import model_left_as_found


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = _layers()
    m.train()
    m[1].eval()  # a frozen part kept in eval mode on purpose
    return m


def _layers() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_monai_gradcam_inside_leaves_modes_and_hooks_as_found():
    from monai.visualize import GradCAM

    model = _model()
    layer = model[3]
    layer.register_forward_hook(lambda mod, i, o: None)  # the caller's own hook stays
    modes = [m.training for m in model.modules()]
    mine = torch.ones_like(model[0].weight)
    model[0].weight.grad = mine  # the caller's gradient survives; no other parameter gains one
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        with model_left_as_found(model, layer):
            GradCAM(nn_module=model, target_layers="3")(x, class_idx=0)
        assert [m.training for m in model.modules()] == modes
        assert len(layer._forward_hooks) == 1 and not layer._backward_hooks
        assert model[0].weight.grad is mine and torch.equal(mine, torch.ones_like(mine))
        assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")


def test_without_it_monai_leaves_hooks_and_flattens_modes():
    """The reason the helper exists; if MONAI ever stops doing this, the helper can go."""
    from monai.visualize import GradCAM

    model = _model()
    GradCAM(nn_module=model, target_layers="3")(torch.randn(2, 1, 8, 8, generator=torch.Generator()), class_idx=0)
    assert model[3]._forward_hooks and model[3]._backward_hooks
    assert model[1].training  # MONAI's .train() on the way out reached the frozen part
