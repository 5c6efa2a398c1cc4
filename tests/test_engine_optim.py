"""Optimiser recipes as config, schedules, LookAhead, batch plans, accumulation, RNG state."""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from radpair.config import load_config
from radpair.data.pairs import EpochBatches
from radpair.errors import ConfigError
from radpair_train import rng
from radpair_train.batches import BatchPlan
from radpair_train.config import OptimConfig, PretrainConfig
from radpair_train.lookahead import Lookahead
from radpair_train.optim import build_lookahead, build_optimizer, build_scheduler, lr_factor, parameter_groups

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "recipes").glob("*.yaml"))


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.text_encoder = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4))
        self.text_projection = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_no_decay_for_norms_and_biases_and_lr_scale_by_prefix():
    groups = parameter_groups(Toy(), 0.1, True, lr=1.0, lr_scale={"text_encoder": 0.5, "text_encoder.1": 0.25})
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["image_encoder.0.weight"]["weight_decay"] == 0.1
    for name in ("image_encoder.0.bias", "image_encoder.1.weight", "text_encoder.1.bias", "text_projection.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    assert by_name["text_encoder.0.weight"]["lr"] == 0.5  # prefix match
    assert by_name["text_encoder.1.weight"]["lr"] == 0.25  # the longest prefix wins
    assert by_name["text_projection.weight"]["lr"] == 1.0
    assert "frozen.weight" not in by_name
    assert groups[0]["weight_decay"] == 0.1 and groups[0]["lr_scale"] == 1.0  # group 0 is the logged rate


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_shapes(schedule):
    cfg = OptimConfig(schedule=schedule, warmup_steps=10, min_lr_ratio=0.1)
    f = lr_factor(cfg, 110)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear warm-up
    end = f(110)
    assert end == pytest.approx(1.0 if schedule == "constant" else 0.1)
    if schedule == "cosine":
        assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    if schedule == "linear":
        assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
        assert f(35) == pytest.approx(0.1 + 0.9 * 0.75)


def test_warmup_fraction_and_scheduler_drives_every_group():
    cfg = OptimConfig(name="sgd", lr=0.2, warmup_fraction=0.05, lr_scale={"text_encoder": 0.005})
    model = Toy()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=200)  # 10 warm-up steps
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    assert lrs[1.0] == pytest.approx(0.2 / 10) and lrs[0.005] == pytest.approx(0.001 / 10)
    for _ in range(9):
        opt.step()
        sched.step()
    assert {g["lr_scale"]: g["lr"] for g in opt.param_groups}[1.0] == pytest.approx(0.2)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]


def test_lookahead_matches_its_definition():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5))
    target = torch.randn(5)
    opt = torch.optim.SGD([w], lr=0.1)
    la = Lookahead(opt, k=3, alpha=0.5)
    slow = w.detach().clone()
    fast = w.detach().clone()
    for step in range(1, 10):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
        fast = fast - 0.1 * 2 * (fast - target)
        if step % 3 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow.clone()
        assert torch.allclose(w.detach(), fast, atol=1e-6), step
    # state survives a weights-only round trip
    buf = io.BytesIO()
    torch.save(la.state_dict(), buf)
    buf.seek(0)
    other = Lookahead(torch.optim.SGD([nn.Parameter(torch.zeros(5))], lr=0.1), k=3)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.counter == 9 and torch.equal(other.slow[0], la.slow[0])


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_paper_recipes_load_and_build(recipe):
    cfg = load_config(PretrainConfig, recipe)
    opt = build_optimizer(Toy(), cfg.optim)
    expected = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optim.name]
    assert type(opt) is expected
    assert (build_lookahead(opt, cfg.optim) is not None) == (recipe.stem == "radtex")
    f = lr_factor(cfg.optim, 1000)
    if cfg.optim.schedule == "constant":
        assert f(0) == f(999) == 1.0


def test_recipes_cover_the_papers():
    assert {p.stem for p in RECIPES} >= {"chauhan2020", "radtex", "timnet", "tienet", "convirt_sections"}


def test_invalid_optim_values_fail_at_load():
    with pytest.raises(ConfigError, match="optim.name"):
        load_config(PretrainConfig, None, ["optim.name=adamm"])
    with pytest.raises(ConfigError, match="warmup_fraction"):
        load_config(PretrainConfig, None, ["optim.warmup_fraction=1.5"])
    with pytest.raises(ConfigError, match="precision"):
        load_config(PretrainConfig, None, ["train.precision=fp8"])


@pytest.mark.parametrize("accumulation", [1, 2])
def test_batch_plan_is_independent_of_the_number_of_processes(accumulation):
    items = np.arange(100, 200)
    one = BatchPlan(items, 16, seed=3, rank=0, world_size=1, accumulation=accumulation)
    four = [BatchPlan(items, 16, seed=3, rank=r, world_size=4, accumulation=accumulation) for r in range(4)]
    for step in (0, 5, 6, 13):  # 6 steps per epoch: crosses epochs
        for j in range(accumulation):
            union = np.concatenate([p.rows(step)[j] for p in four])
            assert np.array_equal(union, one.rows(step)[j])
    # with one micro-batch, a process's rows are EpochBatches' own slice
    if accumulation == 1:
        for r, plan in enumerate(four):
            eb = EpochBatches(100, 16, 3, epoch=1, rank=r, world_size=4)
            assert np.array_equal(plan.rows(7)[0], items[eb.batch(1)])
    # every epoch is reshuffled and covers distinct rows
    epoch0 = np.concatenate([one.global_rows(s) for s in range(6)])
    epoch1 = np.concatenate([one.global_rows(s) for s in range(6, 12)])
    assert len(set(epoch0)) == 96 and not np.array_equal(epoch0, epoch1)
    with pytest.raises(ConfigError, match="divisible"):
        BatchPlan(items, 18, 0, 0, 4, accumulation)


def test_rng_snapshot_round_trips_through_weights_only_load():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = rng.capture()
    buf = io.BytesIO()
    torch.save(state, buf)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    buf.seek(0)
    rng.restore(torch.load(buf, weights_only=True))
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
    assert rng.step_seed(0, 5, 1) != rng.step_seed(0, 5, 0) != rng.step_seed(0, 6, 0)
    assert 0 <= rng.step_seed(2**40, 2**30, 7, "augment") < 2**63


def test_gradient_accumulation_averages_micro_batch_gradients(tmp_path):
    """Two micro-batches in one step give the mean of their separate gradients (the
    contrastive negatives of each are its own micro-batch: no gradient cache)."""
    from radpair_train.loop import Trainer
    from radpair_train.testing import corpus_and_tokenizer, tiny_overrides

    corpus, tok = corpus_and_tokenizer(tmp_path, n=32, size=32, seed=4, vocab_size=100)
    over = tiny_overrides(corpus, tok, tmp_path / "run", **{
        "train.grad_accumulation": 2, "text_encoder.dropout": 0.0, "optim.grad_clip": None,
        "data.augment.enabled": False, "train.max_steps": 1})
    trainer = Trainer(load_config(PretrainConfig, None, over))
    micro = [trainer.dataset.get_batch(rows) for rows in trainer.plan.rows(0)]
    assert [len(b["ids"]) for b in micro] == [8, 8]
    params = dict(trainer.model.named_parameters())
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    separate = []
    for b in micro:
        trainer.model.load_state_dict(state)
        trainer.model.zero_grad()
        trainer.model(b)["loss"].backward()
        separate.append({n: p.grad.clone() for n, p in params.items() if p.grad is not None})
    trainer.model.load_state_dict(state)
    grads = {}
    trainer.optimizer.register_step_pre_hook(
        lambda opt, a, k: grads.update({n: p.grad.clone() for n, p in params.items() if p.grad is not None}))
    out = trainer.train_step(micro)
    for name, g in grads.items():
        assert torch.allclose(g, (separate[0][name] + separate[1][name]) / 2, atol=1e-6, rtol=1e-5), name
    assert math.isfinite(out["global_loss"])


def test_bf16_and_channels_last_run_on_cpu(tmp_path):
    from radpair_train.loop import Trainer
    from radpair_train.testing import corpus_and_tokenizer, tiny_overrides

    corpus, tok = corpus_and_tokenizer(tmp_path, n=32, size=32, seed=5, vocab_size=100)
    over = tiny_overrides(corpus, tok, tmp_path / "run", **{
        "train.precision": "bf16", "train.channels_last": True, "train.max_steps": 2, "optim.lookahead_steps": 2})
    result = Trainer(load_config(PretrainConfig, None, over)).fit()
    assert result.steps == 2 and math.isfinite(result.final_loss)
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        Trainer(load_config(PretrainConfig, None, over + ["train.precision=fp16"]))
