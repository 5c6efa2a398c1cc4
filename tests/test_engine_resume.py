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
from radpair.errors import ConfigError
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


# -- resuming with another config --------------------------------------------------------

def _short(data, out: Path, **extra) -> PretrainConfig:
    return load_config(PretrainConfig, None, tiny_overrides(*data, out, **{
        "train.max_steps": 4, "train.checkpoint_every": 2, **extra}))


def test_resume_with_changed_settings_warns_records_and_applies_them(data, tmp_path, capsys):
    from radpair_train.optim import lr_factor

    out = tmp_path / "run"
    Trainer(_short(data, out, **{"optim.lr": 1e-3, "optim.weight_decay": 1e-4})).fit()
    capsys.readouterr()

    changed = {"optim.lr": 3e-4, "optim.weight_decay": 0.05, "optim.schedule": "linear", "train.max_steps": 8,
               "train.log_every": 2, "train.progress": False, "train.threads": 1, "data.prefetch": False}
    cfg = _short(data, out, **changed)
    probe = Trainer(cfg)
    probe._resume()
    assert probe.step == 4
    assert probe.changed_on_resume == {"optim.lr": (1e-3, 3e-4), "optim.weight_decay": (1e-4, 0.05),
                                       "optim.schedule": ("cosine", "linear"), "train.max_steps": (4, 8)}
    # the new values act (torch alone would keep the checkpoint's lr and weight decay)
    groups = probe.optimizer.param_groups
    assert probe.scheduler.base_lrs == [3e-4 * g["lr_scale"] for g in groups]
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}
    expected = 3e-4 * lr_factor(cfg.optim, 8)(4)  # the new schedule at the resumed step
    assert groups[0]["lr"] == pytest.approx(expected) and probe.scheduler.get_last_lr()[0] == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert "resuming with changed optim.lr: 0.001 -> 0.0003" in printed
    assert "resuming with changed optim.schedule: cosine -> linear" in printed
    assert "resuming with changed train.max_steps: 4 -> 8" in printed
    assert "the learning-rate schedule now spans 8 steps (was 4)" in printed
    assert "train.log_every" not in printed and "data.prefetch" not in printed and "train.threads" not in printed

    result = Trainer(cfg).fit(resume=True)
    assert result.steps == 8
    info = json.loads((out / "run_info.json").read_text())
    assert "changed_on_resume" not in info["history"][0]
    assert info["history"][1]["from_step"] == 4
    assert info["history"][1]["changed_on_resume"] == {
        "optim.lr": [1e-3, 3e-4], "optim.weight_decay": [1e-4, 0.05], "optim.schedule": ["cosine", "linear"],
        "train.max_steps": [4, 8]}
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    for step in (6, 8):  # logged after the step: the rate of the next one
        assert lrs[step] == pytest.approx(3e-4 * lr_factor(cfg.optim, 8)(step))


def test_resume_past_a_shortened_schedule_and_refusals(data, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(_short(data, out)).fit()

    # unchanged: nothing reported, nothing re-applied (exact resume stays exact)
    same = Trainer(_short(data, out, **{"train.log_every": 3}))
    same._resume()
    assert same.changed_on_resume == {}
    capsys.readouterr()

    result = Trainer(_short(data, out, **{"train.max_steps": 2})).fit(resume=True)  # fewer steps than done
    assert result.steps == 4
    printed = capsys.readouterr().out
    assert "resuming with changed train.max_steps: 4 -> 2" in printed and "nothing left to train" in printed

    with pytest.raises(ConfigError, match="optim.name=adamw, this config says sgd"):
        Trainer(_short(data, out, **{"optim.name": "sgd"})).fit(resume=True)
    with pytest.raises(ConfigError, match="does not fit this config's parameter groups.*optim.lr_scale"):
        Trainer(_short(data, out, **{"optim.lr_scale": {"text_encoder": 0.1}})).fit(resume=True)
    with pytest.raises(ConfigError, match="data order differs"):  # refused as before
        Trainer(_short(data, out, **{"data.batch_size": 8})).fit(resume=True)
    # the same number of rows, other rows (a view filter that keeps every row of another
    # corpus would do the same): refused by the rows' hash, not only by their count
    other = Trainer(_short(data, out))
    other._rows_digest = "0" * 64
    with pytest.raises(ConfigError, match="rows_sha256"):
        other._resume()
    # the same ids from another corpus (a synthetic corpus of another seed or difficulty):
    # refused by the corpus's meta.json
    assert Trainer(_short(data, out))._corpus_meta_sha256() is not None
    regenerated = Trainer(_short(data, out))
    regenerated._corpus_meta_sha256 = lambda: "1" * 64
    with pytest.raises(ConfigError, match="corpus_meta_sha256"):
        regenerated._resume()


def test_config_changes_by_dotted_key():
    from radpair.config import to_dict
    from radpair_train.checkpoint import config_changes

    cfg = PretrainConfig()
    saved = to_dict(cfg)
    assert config_changes(json.dumps(saved), cfg) == {}
    assert config_changes(None, cfg) == {}
    cfg.optim.lr_scale = {"text_encoder": 0.1}  # a dict-valued key is one value
    cfg.optim.betas = [0.9, 0.98]
    cfg.train.keep_checkpoints = 9  # ignored
    cfg.train.out_dir = "elsewhere"  # ignored
    assert config_changes(saved, cfg) == {"optim.lr_scale": ({}, {"text_encoder": 0.1}),
                                          "optim.betas": ([0.9, 0.999], [0.9, 0.98])}
    older = json.loads(json.dumps(saved))
    del older["data"]["empty_text"]  # a key newer than the checkpoint, at its default: no change
    del older["optim"]["eps"]
    cfg2 = PretrainConfig()
    cfg2.optim.eps = 1e-6
    assert config_changes(older, cfg2) == {"optim.eps": (None, 1e-6)}
