"""Run third-party tooling on a model and get the model back exactly as it was.

MONAI's ``GradCAM`` is the reason: it registers a forward and a full backward hook on its
target layer and never removes them, and it puts the module it is given in eval mode and,
if that module was training, back in train mode afterwards, for the whole module tree.
Left alone, hooks pile up (one pair per ``GradCAM`` built, each holding its last
activations and gradients), and a model whose parts had different modes (a frozen
backbone in eval mode) would not get them back. It also zeroes the parameters' gradients
and runs a backward pass, which would leave its gradients on the model and lose the
caller's. (MONAI may also set ``inplace=False`` on the target layer itself when that layer
is an activation; that changes no value and is not undone.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

_HOOK_STORES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
# dicts keyed by the same hook ids, holding flags for some of the hooks above
_HOOK_FLAGS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


@contextmanager
def model_left_as_found(model: nn.Module, hooked: nn.Module | None = None) -> Iterator[nn.Module]:
    """Inside the block anything goes; afterwards every submodule of ``model`` has its own
    train/eval mode back, every parameter its own ``.grad`` (the tensor it had, or None),
    and every hook added to ``hooked`` inside the block is gone.
    ``torch`` hands out removal handles only to whoever registered a hook, so the new hooks
    are found by id."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    before = {name: set(getattr(hooked, name, {})) for name in _HOOK_STORES} if hooked is not None else {}
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, grad in grads:
            p.grad = grad
        for name, known in before.items():
            hooks = getattr(hooked, name, None) or {}
            for key in [k for k in hooks if k not in known]:
                hooks.pop(key, None)
                for flags in _HOOK_FLAGS:
                    getattr(hooked, flags, {}).pop(key, None)
