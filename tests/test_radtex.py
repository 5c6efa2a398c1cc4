"""RadTex: bidirectional captioning pretraining on the method contract.

The decoder must be causal in the direction it reads (a token never sees later tokens
forward, nor earlier ones backward), padding must never reach a loss, and the method must
train through the one loop and export an encoder that transfer can load.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from radpair.config import load_config
from radpair.errors import ConfigError
from radpair.methods import BuildContext, build_method, resolve_method_config
from radpair.models.config import ImageEncoderConfig, TextEncoderConfig
from radpair.models.textual_heads import TransformerTextualHead
from radpair.objectives.captioning import reverse_tokens, teacher_forced
from radpair_train.config import PretrainConfig
from radpair_train.loop import Trainer

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "feedforward_size": 64, "dropout": 0.0, "max_length": 40}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from radpair.data.synth import generate_corpus
    from radpair.text import train_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("radtex")
    corpus = generate_corpus(root / "corpus", n_images=120, size=64, seed=7, workers=1)
    train_wordpiece_tokenizer(corpus.index["report"].astype(str).tolist(), root / "tok", vocab_size=300, min_frequency=1)
    return root / "corpus", root / "tok"


def _model(synth, **opts):
    from radpair.text import load_tokenizer

    tok = load_tokenizer(synth[1])
    cfg = resolve_method_config({"name": "radtex_captioning", **SMALL, **opts})
    torch.manual_seed(0)
    model = build_method(cfg, BuildContext(ImageEncoderConfig(name="resnet_tiny"), TextEncoderConfig(), tok))
    return model.eval(), tok


def _head(bidirectional=True) -> TransformerTextualHead:
    torch.manual_seed(0)
    return TransformerTextualHead(50, hidden=16, layers=2, heads=2, feedforward=32, dropout=0.0, max_positions=12,
                                  pad_id=0, bidirectional=bidirectional).eval()


def test_reverse_tokens_reverses_only_the_real_tokens():
    ids = torch.tensor([[2, 7, 8, 3, 0, 0], [2, 9, 3, 0, 0, 0], [2, 4, 5, 6, 7, 3]])
    mask = (ids != 0).long()
    assert reverse_tokens(ids, mask).tolist() == [[3, 8, 7, 2, 0, 0], [3, 9, 2, 0, 0, 0], [3, 7, 6, 5, 4, 2]]
    tf = teacher_forced(ids, mask)
    assert tf.inputs.tolist()[1] == [2, 9, 3, 0, 0] and tf.targets.tolist()[1] == [9, 3, -100, -100, -100]


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_token_never_sees_the_tokens_it_must_predict(direction):
    """Forward: logits at t depend on tokens <= t only. Backward: the decoder reads the
    reversed report, so in report order position t depends on tokens >= t only."""
    head = _head()
    memory = torch.randn(1, 4, 16)
    ids = torch.tensor([[2, 11, 12, 13, 14, 15, 16, 3]])
    mask = torch.ones_like(ids)

    @torch.no_grad()
    def report_order_logits(x):
        if direction == "forward":
            return head.logits(memory, x, mask, "forward")
        out = head.logits(memory, reverse_tokens(x, mask), mask, "backward")
        return out.flip(1)  # back to report order (all rows are full length here)

    base = report_order_logits(ids)
    for j in range(1, ids.shape[1] - 1):  # j >= 1 and j <= T-2: both sides non-empty
        changed = ids.clone()
        changed[0, j] = 40
        diff = (report_order_logits(changed) - base).abs().amax(dim=-1)[0]
        unaffected = diff[:j] if direction == "forward" else diff[j + 1:]
        affected = diff[j:] if direction == "forward" else diff[:j + 1]
        assert float(unaffected.max()) < 1e-5, (direction, j)
        assert float(affected.max()) > 1e-4, (direction, j)


def test_padding_never_changes_the_loss(synth):
    model, tok = _model(synth)
    ids = torch.tensor([[tok.cls_token_id, 20, 21, 22, tok.sep_token_id, 0, 0],
                        [tok.cls_token_id, 23, tok.sep_token_id, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a = model({"images": images, "input_ids": ids, "attention_mask": mask})
        junk = ids.masked_fill(mask == 0, 57)
        b = model({"images": images, "input_ids": junk, "attention_mask": mask})
    assert torch.allclose(a["loss"], b["loss"], atol=1e-6)
    assert set(a["loss_components"]) == {"forward", "backward"}
    assert torch.allclose(a["loss"], sum(a["loss_components"].values()))


def test_forward_only_has_one_decoder_and_config_errors_name_the_key(synth):
    model, _ = _model(synth, direction="forward")
    assert model.textual.directions == ("forward",)
    with pytest.raises(ConfigError, match="did you mean 'bidirectional'"):
        resolve_method_config({"name": "radtex_captioning", "direction": "bidirectonal"}).validate()
    with pytest.raises(ConfigError, match="multiple of method.num_heads"):
        resolve_method_config({"name": "radtex_captioning", "hidden_size": 30, "num_heads": 4}).validate()


def test_the_head_learns_to_caption_a_fixed_batch(synth):
    """A few steps on one batch must drive the captioning loss down (the model can learn)."""
    model, tok = _model(synth)
    model.train()
    texts = ["the heart is normal", "small left pleural effusion", "no pneumothorax"]
    enc = tok(texts, padding=True, return_tensors="pt")
    batch = {"images": torch.randn(3, 1, 64, 64), "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.fixture(scope="module")
def radtex_run(synth, tmp_path_factory):
    corpus, tok = synth
    out = tmp_path_factory.mktemp("radtex_run") / "run"
    over = {"data.corpus": str(corpus), "text_encoder.tokenizer": str(tok), "train.out_dir": str(out),
            "image_encoder.name": "resnet_tiny", "text_encoder.max_length": 16, "data.batch_size": 16,
            "train.progress": False, "train.threads": 1, "train.device": "cpu", "optim.warmup_steps": 2,
            "train.epochs": 1, "method.name": "radtex_captioning",
            **{f"method.{k}": v for k, v in SMALL.items()}}
    cfg = load_config(PretrainConfig, None, [f"{k}={json.dumps(v) if isinstance(v, bool) else v}"
                                             for k, v in over.items()])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.image_encoder.state_dict().items()}
    result = trainer.fit()
    return out, trainer, before, result


def test_radtex_trains_through_the_loop_and_exports(radtex_run):
    out, trainer, before, result = radtex_run
    assert result.steps > 0 and np.isfinite(result.final_loss)
    after = load_file(str(out / "image_encoder.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    head = load_file(str(out / "textual_head.safetensors"))
    assert "textual.output.weight" in head and "visual_projection.linear.weight" in head
    # a field longer than text_encoder.max_length is fine: RadTex has no BERT text encoder
    assert trainer.needs.text_fields[0].max_length == SMALL["max_length"] > 16


def test_generation_is_deterministic_and_beam_one_is_greedy(synth, radtex_run):
    from radpair.generation import DecodingConfig
    from radpair.generation.generate import generate_reports
    from radpair.generation.runs import load_generative_run

    run = load_generative_run(radtex_run[0])
    greedy = generate_reports(run, synth[0], limit=6, decoding=DecodingConfig("greedy", max_length=12)).frame
    beam1 = generate_reports(run, synth[0], limit=6,
                             decoding=DecodingConfig("beam", max_length=12, beam_width=1)).frame
    assert greedy["report"].tolist() == beam1["report"].tolist()
    state = torch.random.get_rng_state()
    nuc = [generate_reports(run, synth[0], limit=6, seed=3, batch_size=4,
                            decoding=DecodingConfig("nucleus", max_length=12, top_p=0.95)).frame for _ in range(2)]
    assert nuc[0].equals(nuc[1]) and torch.equal(state, torch.random.get_rng_state())
    # the decoder's positions cap the length whatever is asked
    long = generate_reports(run, synth[0], limit=2, decoding=DecodingConfig("greedy", max_length=500))
    assert long.decoding["max_length"] == SMALL["max_length"] - 1


def test_generate_cli_writes_reports_by_image_id(synth, radtex_run, tmp_path, capsys):
    import pandas as pd

    from radpair_train.cli import main

    out = tmp_path / "gen.csv"
    assert main(["generate", str(synth[0]), "--checkpoint", str(radtex_run[0]), "-o", str(out), "--limit", "5",
                 "--beam", "2", "--max-length", "10", "--no-progress"]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns[:4]) == ["image_id", "patient_id", "study_id", "report"] and len(frame) == 5
    info = json.loads((tmp_path / "gen.csv.json").read_text())
    assert info["decoding"]["strategy"] == "beam" and info["decoding"]["beam_width"] == 2
    # a run of a method that writes nothing is refused with the reason
    assert main(["generate", str(synth[0]), "--checkpoint", str(tmp_path), "-o", str(out)]) == 2
    assert "error" in capsys.readouterr().err


def test_pair_fractions_are_nested_patient_draws():
    """RadTex's Fig. 3 sweeps the pretraining-set size: a smaller fraction must be a subset of
    a larger one, whole patients at a time, and the same for the same seed."""
    import pandas as pd

    from radpair_train.loop import patient_fraction

    class Rows:
        rows = pd.DataFrame({"patient_id": [f"p{i // 3}" for i in range(300)]})

    items = np.arange(300)
    small, large = (patient_fraction(Rows, items, f, seed=4) for f in (0.1, 0.5))
    assert set(small) <= set(large) and len(small) == 30 and len(large) == 150
    patients = Rows.rows["patient_id"].to_numpy()
    assert set(patients[small]).isdisjoint(set(patients[np.setdiff1d(items, small)]))
    assert np.array_equal(small, patient_fraction(Rows, items, 0.1, seed=4))
    assert not np.array_equal(small, patient_fraction(Rows, items, 0.1, seed=5))
    with pytest.raises(ConfigError, match="pair_fraction"):
        load_config(PretrainConfig, None, ["data.pair_fraction=1.5"])


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_step_equals_the_full_recompute(norm_first):
    """Generation feeds one token at a time through a per-layer cache; it must give the
    logits the full causal pass gives at every position."""
    torch.manual_seed(0)
    head = TransformerTextualHead(50, hidden=16, layers=2, heads=2, feedforward=32, dropout=0.1, max_positions=12,
                                  pad_id=0, norm_first=norm_first).eval()
    memory = torch.randn(3, 4, 16)
    ids = torch.randint(4, 50, (3, 9))
    with torch.no_grad():
        full = head.logits(memory, ids, None, "forward")
        cache = head.empty_cache(3, memory.device)
        for t in range(ids.shape[1]):
            step, cache = head.step_logits(memory, ids[:, t], cache)
            assert torch.allclose(step, full[:, t], atol=1e-5), t
