"""Exact resume: a run SIGKILLed at a random step and resumed ends bit-identical on CPU.

The killed run is a separate process that SIGKILLs itself a random few milliseconds
after a random step, so the kill lands anywhere: mid-step, mid-checkpoint-write or
between steps. Nothing else about the runs differs.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from radpair.config import load_config
from radpair_train.checkpoint import CheckpointManager
from radpair_train.config import PretrainConfig
from radpair_train.loop import Trainer
from radpair_train.testing import corpus_and_tokenizer, tiny_overrides

STEPS = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus_and_tokenizer(tmp_path_factory.mktemp("resume"), n=96, size=64, seed=1)


def _overrides(data, out: Path) -> list[str]:
    # dropout on (RNG must resume too); 96 rows / batch 16 = 6 steps per epoch, so the
    # run crosses epochs (reshuffle) as well as checkpoints
    return tiny_overrides(*data, out, **{
        "train.max_steps": STEPS, "train.checkpoint_every": 3, "train.keep_checkpoints": 2,
        "text_encoder.dropout": 0.1, "optim.lookahead_steps": 4, "optim.warmup_steps": 5,
    })


KILLER = textwrap.dedent(
    """
    import os, signal, sys, threading
    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer
    kill_step, delay = int(sys.argv[1]), float(sys.argv[2])
    def on_step(step, out):
        if step == kill_step:
            threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    Trainer(load_config(PretrainConfig, None, sys.argv[3:]), on_step=on_step).fit()
    """
)


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    state = CheckpointManager(out / "checkpoints").load_latest()
    assert state is not None and state["step"] == STEPS
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    for pid, s in state["optimizer"]["state"].items():
        flat.update({f"optim.{pid}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    flat.update({f"lookahead.{i}": v for i, v in enumerate(state["lookahead"]["slow"])})
    for name in ("image_encoder", "text_encoder"):
        flat.update({f"{name}.{k}": v for k, v in load_file(str(out / f"{name}.safetensors")).items()})
    return flat


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def test_sigkill_at_random_step_then_resume_is_bit_identical(data, tmp_path):
    kill_step = random.randint(1, STEPS - 6)
    delay = random.uniform(0.0, 0.03)
    why = f"(killed {delay * 1000:.1f} ms after step {kill_step})"

    straight = tmp_path / "straight"
    Trainer(load_config(PretrainConfig, None, _overrides(data, straight))).fit()

    resumed = tmp_path / "resumed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(kill_step), str(delay), *_overrides(data, resumed)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, f"the run was not killed {why}: rc={proc.returncode}\n{proc.stderr[-2000:]}"
    done = _losses(resumed)
    assert done and done[-1][0] < STEPS, why

    result = Trainer(load_config(PretrainConfig, None, _overrides(data, resumed))).fit(resume=True)
    assert result.steps == STEPS

    a, b = _final_state(straight), _final_state(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ {why}, e.g. {different[:5]}"
    assert _losses(straight) == _losses(resumed), why
    info = json.loads((resumed / "run_info.json").read_text())
    assert [h["from_step"] for h in info["history"]][0] == 0 and len(info["history"]) == 2
