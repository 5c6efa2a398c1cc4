"""TieNet: padding never reaches an output, Eq. (6) and the AETE penalty by hand, every
variant and mode runs, a frozen encoder stays frozen, and a run goes through the loop."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from radpair.errors import ConfigError
from radpair.generation.decoding import DecodingConfig
from radpair.methods import BuildContext, DatasetStats, build_method, method_needs, resolve_method_config
from radpair.methods.tienet import TieNet, VARIANT_MODES
from radpair.models.config import ImageEncoderConfig, TextEncoderConfig
from radpair.objectives.tienet import (attention_penalty, balance_betas, batch_betas, class_count_weights,
                                       report_loss, weighted_bce)

COLUMNS = ["a", "b", "c"]
TINY = {"name": "tienet", "grid_size": None, "grid_channels": 8, "word_dim": 8, "lstm_size": 16,
        "spatial_attention_dim": 8, "aete_rows": 3, "aete_hidden": 12, "label_task": None,
        "label_columns": COLUMNS, "text_max_length": 40}
REPORTS = ["FINDINGS: Mild pulmonary edema. Heart size is normal.", "FINDINGS: No pulmonary edema.",
           "FINDINGS: Heart size is normal. No pulmonary edema. Mild pulmonary edema.", "FINDINGS: Mild edema."]


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    from radpair.text import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def _model(tok, weights=None, training=True, **kw) -> TieNet:
    torch.manual_seed(0)
    parts = BuildContext(ImageEncoderConfig(name="resnet_tiny", weights=weights), TextEncoderConfig(max_length=40), tok,
                         training=training)
    stats = DatasetStats(n_rows=8, n_labelled=8, class_counts=np.array([3, 1, 4]), class_names=COLUMNS)
    return build_method({**TINY, **kw}, parts, stats)


def _batch(tok, n=4, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    enc = tok([REPORTS[i % len(REPORTS)] for i in range(n)], padding=True, return_tensors="pt")
    return {"images": torch.rand(n, 1, 64, 64, generator=g), "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"], "labels": torch.randint(0, 2, (n, 3), generator=g).float(),
            "label_mask": torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]] * (n // 4), dtype=torch.float32)}


def _repad(batch, vocab: int, extra: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    """The same reports with random ids in the padding and ``extra`` more padded columns."""
    g = torch.Generator().manual_seed(seed)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    ids = torch.cat([ids, torch.zeros(ids.shape[0], extra, dtype=ids.dtype)], 1)
    mask = torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], 1)
    ids = torch.where(mask.bool(), ids, torch.randint(0, vocab, ids.shape, generator=g))
    return {**batch, "input_ids": ids, "attention_mask": mask}


# -- the losses by hand ---------------------------------------------------------------------------

def test_weighted_bce_matches_a_hand_computed_example():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    beta_pos, beta_neg, lam = torch.tensor([2.0, 3.0]), torch.tensor([0.5, 0.25]), torch.tensor([0.8, 0.4])
    expected = (0.8 * 2.0 * math.log(2) + 0.4 * 0.25 * math.log(1 + math.e ** 2)
                + 0.8 * 0.5 * math.log(1 + math.e ** -1)) / 4  # the masked entry adds nothing
    got = weighted_bce(logits, targets, mask, beta_pos, beta_neg, lam)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # plain BCE when every weight is 1
    plain = weighted_bce(logits, targets, torch.ones_like(mask))
    assert plain.item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).item())


def test_balance_weights_from_class_counts_and_from_the_batch():
    w = class_count_weights(np.array([2, 0]), 4, "tienet")
    assert w.beta_pos.tolist() == [0.5, 1.0] and w.beta_neg.tolist() == [0.5, 0.0] and w.lam.tolist() == [0.5, 1.0]
    w = class_count_weights(np.array([1, 0]), 4, "chestxray8")
    assert w.beta_pos.tolist() == [4.0, 0.0] and w.beta_neg.tolist() == pytest.approx([4 / 3, 1.0])
    w = class_count_weights(np.array([1, 0]), 4, balance=False, class_weights=False)
    assert w.beta_pos.tolist() == w.beta_neg.tolist() == w.lam.tolist() == [1.0, 1.0]
    # the paper's |P| = images with any disease, |N| = with none, over labelled rows only
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    bp, bn = batch_betas(targets, mask, "tienet")
    assert (bp.item(), bn.item()) == pytest.approx((1 / 3, 2 / 3))
    # both forms weigh a positive |N|/|P| times a negative
    for form in ("tienet", "chestxray8"):
        bp, bn = balance_betas(np.array(3.0), np.array(9.0), form)
        assert bp / bn == pytest.approx(3.0)


def test_attention_penalty_matches_a_hand_computed_example():
    g = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]],    # GGᵀ − I = [[−.5, 0], [0, 0]] → 0.25
                      [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])   # GGᵀ − I = [[0, 1], [1, 0]] → 2
    assert attention_penalty(g).item() == pytest.approx((0.25 + 2.0) / 2)


def test_report_loss_ignores_padded_steps():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 2, 3], [4, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()
    want = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    assert report_loss(logits, targets, mask).item() == pytest.approx(want.item(), rel=1e-6)
    assert report_loss(logits, targets, torch.zeros_like(mask)).item() == 0.0


# -- the model ------------------------------------------------------------------------------------

def test_padding_changes_no_output(tok):
    model = _model(tok).eval()
    batch = _batch(tok)
    a, b = model(batch), model(_repad(batch, len(tok)))
    t = batch["input_ids"].shape[1] - 1
    for key in ("logits", "aete", "sw_gap"):
        torch.testing.assert_close(a[key], b[key])
    torch.testing.assert_close(a["loss"], b["loss"])
    for key in a["loss_components"]:
        torch.testing.assert_close(a["loss_components"][key], b["loss_components"][key])
    torch.testing.assert_close(a["text_attention"], b["text_attention"][..., :t])
    torch.testing.assert_close(a["spatial_attention"], b["spatial_attention"][:, :t])
    assert b["text_attention"][..., t:].abs().sum() == 0 and b["spatial_attention"][:, t:].abs().sum() == 0
    for mode in ("I+R", "I+GR"):
        kw = {"decoding": DecodingConfig(max_length=5)} if mode == "I+GR" else {}
        torch.testing.assert_close(model.classify(batch, mode, **kw),
                                   model.classify(_repad(batch, len(tok)), mode, **kw))


def test_aete_puts_zero_weight_on_padded_steps(tok):
    model = _model(tok).eval()
    batch = _batch(tok)
    g = model(batch)["text_attention"]  # [B, r, T]
    steps = batch["attention_mask"][:, 1:].bool()
    assert g.shape[1] == 3 and (g.masked_select(~steps.unsqueeze(1).expand_as(g)) == 0).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[:2]))
    assert (~steps).any()  # the batch does have padding


def test_forward_returns_a_finite_loss_and_trains_the_image_encoder(tok):
    model = _model(tok).train()
    out = model(_batch(tok))
    assert set(out["loss_components"]) == {"classification", "report", "attention_penalty"}
    assert out["logits"].shape == (4, 3) and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.image_encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert set(model.exports()) == {"image_encoder", "transition_layer", "decoder", "aete", "classifier"}


def test_a_frozen_image_encoder_keeps_its_weights_and_batchnorm_statistics(tok, tmp_path):
    from radpair.models.export import save_encoder_weights
    from radpair.models.image_encoders import build_image_encoder

    with pytest.raises(ConfigError, match="image_encoder.weights"):
        _model(tok, freeze_image_encoder=True)
    # a finished frozen run is rebuilt without start weights to load its checkpoint: no refusal then
    reloaded = _model(tok, training=False, freeze_image_encoder=True)
    assert not any(p.requires_grad for p in reloaded.image_encoder.parameters())
    torch.manual_seed(3)
    encoder = build_image_encoder(ImageEncoderConfig(name="resnet_tiny"))
    path = save_encoder_weights(encoder, tmp_path / "enc.safetensors")
    model = _model(tok, weights=str(path), freeze_image_encoder=True).train()
    assert not model.image_encoder.training and model.decoder.training
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(_batch(tok))["loss"].backward()
    opt.step()
    assert all(p.grad is None for p in model.image_encoder.parameters())
    after = model.image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running_mean/var included
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.transition.parameters())


@pytest.mark.parametrize("variant", sorted(VARIANT_MODES))
def test_every_variant_and_mode_runs(tok, variant):
    model = _model(tok, variant=variant).train()
    batch = _batch(tok)
    out = model(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    expected = {"tienet": {"classification", "report", "attention_penalty"},
                "report_only": {"classification", "report", "attention_penalty"},
                "image_only": {"classification"}, "plain_captioning": {"report"}}[variant]
    assert set(out["loss_components"]) == expected
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), "every parameter in the graph (DDP)"
    model.eval()
    greedy = DecodingConfig(max_length=6)
    for mode in ("R", "I+R", "I+GR", "I"):
        if mode in VARIANT_MODES[variant]:
            logits = model.classify(batch, mode, decoding=greedy)
            assert logits.shape == (4, 3) and torch.isfinite(logits).all()
        else:
            with pytest.raises(ConfigError, match="variant"):
                model.classify(batch, mode, decoding=greedy)
    if variant in ("tienet", "plain_captioning"):
        reports = model.generate(batch["images"], decoding=DecodingConfig(strategy="beam", beam_width=2, max_length=5))
        assert len(reports) == 4 and all(len(r) <= 5 for r in reports)
    if variant != "plain_captioning":
        probs = model.predict(batch, decoding=greedy)
        assert probs.shape == (4, 3) and ((probs >= 0) & (probs <= 1)).all()


def test_i_plus_gr_classifies_from_its_own_report_and_is_deterministic(tok):
    model = _model(tok).eval()
    batch = _batch(tok)
    sample = DecodingConfig(strategy="nucleus", top_p=0.95, max_length=8)
    runs = [model.classify(batch, "I+GR", decoding=sample, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])
    tokens = model.generate(batch["images"], decoding=DecodingConfig(max_length=8))
    torch.testing.assert_close(model.classify(batch, "I+GR", decoding=DecodingConfig(max_length=8)),
                               model.classify_generated(batch["images"], tokens))
    # with its own report read back, I+GR is I+R on that report
    ids, mask = model.pack_tokens(tokens)
    torch.testing.assert_close(model.classify_generated(batch["images"], tokens),
                               model.classify({**batch, "input_ids": ids, "attention_mask": mask}, "I+R"))


def test_a_few_steps_overfit_a_tiny_batch(tok):
    model = _model(tok, dropout=0.0, alpha=0.5).train()
    batch = _batch(tok)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0] and all(b < a for a, b in zip(losses, losses[1:])), losses


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="did you mean 'method.alpha'"):
        resolve_method_config({"name": "tienet", "alpah": 0.3})
    with pytest.raises(ConfigError, match="method.variant"):
        resolve_method_config({"name": "tienet", "variant": "image"}).validate()
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_method_config({"name": "tienet", "label_columns": ["edema"]}).validate()
    with pytest.raises(ConfigError, match="alpha"):
        resolve_method_config({"name": "tienet", "alpha": 1.5}).validate()
    cfg = resolve_method_config({"name": "tienet"})
    assert (cfg.grid_size, cfg.grid_channels, cfg.lstm_size, cfg.aete_rows, cfg.aete_hidden, cfg.word_dim,
            cfg.dropout, cfg.penalty_weight) == (16, 1024, 256, 5, 2000, 200, 0.5, 1.0)
    needs = method_needs(cfg)
    assert needs.labels.task == "findings7" and needs.labels.source == "report" and not needs.text_encoder
    assert needs.text_fields[0].sections == "findings+impression"
    assert method_needs(resolve_method_config({"name": "tienet", "variant": "plain_captioning"})).labels is None
    assert not method_needs(resolve_method_config({"name": "tienet", "variant": "image_only"})).text_fields
    columns = method_needs(resolve_method_config({"name": "tienet", "label_task": None, "label_columns": ["edema"]}))
    assert columns.labels.columns == ("edema",) and columns.labels.task is None  # read from data.label_source


def test_a_grid_larger_than_the_feature_map_is_refused(tok):
    model = _model(tok, grid_size=4)  # resnet_tiny at 64 px gives 2×2
    with pytest.raises(ConfigError, match="grid_size"):
        model(_batch(tok))


# -- through the loop -----------------------------------------------------------------------------

def test_pretrain_through_the_loop_and_export(tmp_path):
    from radpair.config import load_config
    from radpair.data.synth import generate_corpus
    from radpair.text import train_wordpiece_tokenizer
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    corpus = generate_corpus(tmp_path / "corpus", n_images=48, size=64, seed=3, workers=1)
    train_wordpiece_tokenizer(corpus.index["report"].astype(str).tolist(), tmp_path / "tok", vocab_size=150,
                              min_frequency=1)
    over = {"data.corpus": str(tmp_path / "corpus"), "text_encoder.tokenizer": str(tmp_path / "tok"),
            "train.out_dir": str(tmp_path / "run"), "image_encoder.name": "resnet_tiny", "data.batch_size": 8,
            "train.progress": False, "train.threads": 1, "train.device": "cpu", "train.max_steps": 3,
            "train.log_every": 1, "text_encoder.max_length": 32, "method.name": "tienet", "method.grid_size": None,
            **{f"method.{k}": v for k, v in TINY.items() if k not in ("name", "grid_size", "label_task",
                                                                       "label_columns", "text_max_length")},
            "method.text_max_length": 48}  # longer than the (unused) BERT: TieNet reads its text itself
    cfg = load_config(PretrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in over.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the chexpert phrase lists may be absent: fallback labelers
        trainer = Trainer(cfg)
        before = {k: v.clone() for k, v in trainer.model.image_encoder.state_dict().items()}
        result = trainer.fit()
    assert result.steps == 3 and np.isfinite(result.final_loss)
    assert trainer.stats.class_counts.shape == (7,)  # findings7 from the report labelers
    for name in trainer.model.exports():
        assert (tmp_path / "run" / f"{name}.safetensors").is_file(), name
    after = trainer.model.image_encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
