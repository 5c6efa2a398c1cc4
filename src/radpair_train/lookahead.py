"""LookAhead (Zhang, Lucas, Hinton & Ba, 2019) as a post-step hook on any optimiser.

RadTex pretrains with VirTex's recipe: SGD wrapped in LookAhead. Rather than a wrapper
optimiser class (which confuses learning-rate schedulers and ``state_dict`` round trips),
LookAhead here is a separate object that the base optimiser calls after every step
(``register_step_post_hook``): the scheduler still drives the base optimiser, and the
slow weights are plain tensors that go into the checkpoint like everything else.

Every ``k`` fast steps: ``slow += alpha * (fast - slow)``; ``fast = slow``.
"""

from __future__ import annotations

from typing import Any

import torch


class Lookahead:
    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if k < 1:
            raise ValueError(f"LookAhead needs k >= 1, got {k}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"LookAhead needs 0 < alpha <= 1, got {alpha}")
        self.optimizer = optimizer
        self.k = k
        self.alpha = alpha
        self.counter = 0
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        # slow weights start at the initial fast weights
        self.slow = [p.detach().clone() for p in self.params]
        self._handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_step())

    @torch.no_grad()
    def after_step(self) -> None:
        self.counter += 1
        if self.counter % self.k:
            return
        for p, slow in zip(self.params, self.slow):
            slow.add_(p.detach() - slow, alpha=self.alpha)
            p.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self.counter, "k": self.k, "alpha": self.alpha, "slow": [s.clone() for s in self.slow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        slow = state["slow"]
        if len(slow) != len(self.slow):
            raise ValueError(f"LookAhead state holds {len(slow)} tensors, the optimiser has {len(self.slow)} parameters")
        self.counter = int(state["counter"])
        with torch.no_grad():
            for mine, saved in zip(self.slow, slow):
                mine.copy_(saved)

    def remove(self) -> None:
        self._handle.remove()
