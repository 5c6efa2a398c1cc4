"""Random-number state of a run: per-step seeding and checkpointable snapshots.

Exact resume needs every random draw after a restart to equal the draw the uninterrupted
run made. Two mechanisms make that hold:

* **per-step seeding** — before step ``s`` on process ``r`` the global torch generators
  (dropout, random masks inside models) are seeded from ``(seed, s, r)``, and the
  augmentation generator from ``(seed, s, r, "augment")``. A step's randomness is then a
  pure function of where it is, whatever happened before (a crash, a different
  checkpoint interval, a prefetched batch), and each process draws different dropout
  masks for its different samples;
* **snapshots** — checkpoints also hold every generator's state (torch CPU and CUDA,
  NumPy's legacy global, Python's ``random``), stored as tensors so that loading stays
  within ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

_STREAMS = {"torch": 0, "augment": 1}


def step_seed(seed: int, step: int, rank: int, stream: str = "torch") -> int:
    """A 63-bit seed for (run seed, step, process, stream), well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed, step, rank, _STREAMS[stream]]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed the global torch generators (CPU and every GPU) for this step of this process."""
    torch.manual_seed(step_seed(seed, step, rank, "torch"))


def augment_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(step_seed(seed, step, rank, "augment"))


def capture() -> dict[str, Any]:
    """Every global generator's state, as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": None if py_gauss is None else float(py_gauss),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
