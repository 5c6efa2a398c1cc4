"""`radpair explain`: every method gets the explanations its capabilities allow, the maps
have the properties that make them readable (Grad-CAM fine enough, attention a
distribution), and no input disappears from the output.

Runs are trained for a few steps through the real loop on a small generated corpus: the
maps are not meant to be good, only well-formed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from radpair.config import load_config
from radpair.errors import ConfigError
from radpair.explain import MIN_CELLS, choose_layer, cls_attention, explain_run, load_subject
from radpair.explain.subject import Subject
from radpair_train.config import PretrainConfig
from radpair_train.loop import Trainer

TINY = {"image_encoder.name": "resnet_tiny", "text_encoder.hidden_size": 32, "text_encoder.num_layers": 1,
        "text_encoder.num_heads": 2, "text_encoder.intermediate_size": 64, "text_encoder.max_length": 48,
        "text_encoder.dropout": 0.0, "data.batch_size": 16, "train.progress": False, "train.threads": 1,
        "train.device": "cpu", "optim.warmup_steps": 1, "train.max_steps": 2}
RUNS = {
    "convirt": {"method.name": "convirt", "method.projection_dim": 16},
    "supervised": {"method.name": "supervised", "method.labels": ["pleural_effusion", "cardiomegaly"]},
    "radtex": {"method.name": "radtex_captioning", "method.hidden_size": 32, "method.num_layers": 1,
               "method.num_heads": 2, "method.feedforward_size": 64, "method.dropout": 0.0, "method.max_length": 24},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from radpair.data.synth import generate_corpus
    from radpair.text import train_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("explain")
    corpus = generate_corpus(root / "corpus", n_images=48, size=64, seed=3, workers=1)
    train_wordpiece_tokenizer(corpus.index["report"].astype(str).tolist(), root / "tok", vocab_size=300,
                              min_frequency=1)
    out = {"corpus": root / "corpus", "root": root}
    for name, opts in RUNS.items():
        over = {**TINY, **opts, "data.corpus": str(root / "corpus"), "text_encoder.tokenizer": str(root / "tok"),
                "train.out_dir": str(root / name)}
        torch.manual_seed(0)
        Trainer(load_config(PretrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in over.items()])).fit()
        out[name] = root / name
    return out


def _listed(out: Path) -> dict:
    data = json.loads((out / "explanations.json").read_text())
    for f in data["files"]:
        assert Path(f).is_file(), f
    assert (out / "index.html").is_file()
    return data


def test_joint_run_gets_gradcam_cls_attention_similarity_and_tsne(runs, tmp_path):
    res = explain_run(runs["convirt"], tmp_path / "ex", corpus=runs["corpus"], split="all", limit=6)
    data = _listed(tmp_path / "ex")
    assert data["method"] == "convirt" and data["gradcam"]["layer"] == res.layer
    assert data["gradcam"]["cells"] == [16, 16]  # 64 px: layer1, the last stage with >= 14x14
    assert "own report" in data["gradcam"]["target"] and data["tsne"] and data["similarity_maps"]
    assert "approximation" in data["similarity_maps"]  # ConVIRT's head is an MLP
    for item in res.items:
        assert item.status == "ok" and item.gradcam.shape == (16, 16) and np.all(item.gradcam >= 0)
        assert {"Grad-CAM", "image-sentence similarity"} <= set(item.files)
        real = np.array(item.cls_mask)
        assert abs(sum(np.array(item.cls_weights)[real]) - 1.0) < 1e-5
        # the projection reads the last feature map (64 px: 2x2), not the Grad-CAM layer
        assert item.similarity.shape[1:] == (2, 2) and np.all(np.abs(item.similarity) <= 1 + 1e-5)
    html = (tmp_path / "ex" / "index.html").read_text()
    assert "[CLS] attention" in html and "<script" not in html


def test_cls_attention_is_a_distribution_over_real_tokens_and_zero_on_padding(runs):
    subject = load_subject(runs["convirt"])
    rows = cls_attention(subject, ["No pleural effusion.", "Small left pleural effusion with adjacent atelectasis. "
                                   "The cardiac silhouette is enlarged."])
    short, long_ = rows
    assert len(short[0]) == len(long_[0]) and (~short[2]).any()  # the short text is padded
    for _, weights, mask in rows:
        assert abs(weights[mask].sum() - 1.0) < 1e-5
        assert np.all(weights[~mask] == 0.0)


def test_classifier_run_explains_the_named_class(runs, tmp_path):
    res = explain_run(runs["supervised"], tmp_path / "ex", corpus=runs["corpus"], split="all", limit=5,
                      target="cardiomegaly")
    data = _listed(tmp_path / "ex")
    assert "class logit of 'cardiomegaly'" == data["gradcam"]["target"]
    assert all(i.target == "cardiomegaly" for i in res.items)
    assert not data["capabilities"]["bert_text_encoder"] and data["cls_attention"] is None
    with pytest.raises(ConfigError, match="did you mean 'cardiomegaly'"):
        explain_run(runs["supervised"], tmp_path / "bad", corpus=runs["corpus"], limit=2, target="cardiomegali")


def test_captioner_has_one_attention_map_per_generated_word_each_summing_to_one(runs, tmp_path):
    res = explain_run(runs["radtex"], tmp_path / "ex", corpus=runs["corpus"], split="all", limit=4)
    data = _listed(tmp_path / "ex")
    assert data["capabilities"]["writes_reports"] and "report the model writes" in data["gradcam"]["target"]
    for item in res.items:
        assert len(item.words) > 0 and len(item.decoder_maps) == len(item.words)
        for m in item.decoder_maps:
            assert m.shape == (2, 2)  # RadTex attends over the encoder's last feature map (64 px: 2x2)
            assert abs(float(m.sum()) - 1.0) < 1e-5 and np.all(m >= 0)
        saved = np.load(item.files["decoder attention (arrays)"])
        assert saved["maps"].shape[0] == len(item.words)


@pytest.mark.parametrize("run, target", [("supervised", "cardiomegaly"), ("radtex", "auto")])
def test_gradcam_maps_depend_on_the_image_alone_and_leave_the_model_untouched(runs, run, target):
    """Two bugs this pins down: MONAI's wrapper left the model in train mode, so every later
    call moved the BatchNorm statistics and changed the maps; and a report writer's score
    encoded one image at a time, so a batch got the last image's activations only."""
    from radpair.data.corpus import Corpus
    from radpair.data.tensors import images_to_tensor
    from radpair.explain.maps import choose_layer, gradcam

    subject = load_subject(runs[run])
    x = images_to_tensor(Corpus.open(runs["corpus"]).read_images(np.arange(5)))
    layer = subject.model.get_submodule(choose_layer(subject, tuple(x.shape[-2:]), None).name)
    state = {k: v.clone() for k, v in subject.model.state_dict().items()}
    whole = gradcam(subject, x, target, batch_size=5).maps
    assert whole.shape[0] == 5
    one_by_one = gradcam(subject, x, target, batch_size=1).maps
    again = gradcam(subject, x, target, batch_size=2).maps
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-4, atol=1e-6 * float(np.abs(whole).max()))
    np.testing.assert_allclose(again, whole, rtol=1e-4, atol=1e-6 * float(np.abs(whole).max()))
    assert not subject.model.training
    assert not layer._forward_hooks and not layer._backward_hooks
    for k, v in subject.model.state_dict().items():
        assert torch.equal(v, state[k]), k


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from radpair.models.image_encoders import resnet_tiny

        self.image_encoder = resnet_tiny()


@pytest.mark.parametrize("size, layer, cells", [
    (224, "image_encoder.trunk.layer3", (14, 14)),  # layer4 is 7x7: too coarse
    (64, "image_encoder.trunk.layer1", (16, 16)),
    (32, "image_encoder.trunk.layer1", (8, 8)),  # nothing reaches 14x14: the largest stage
])
def test_gradcam_layer_is_the_last_stage_with_14x14_cells_else_the_largest(size, layer, cells):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        subject = Subject(Path("mem"), "run", _Holder().eval(), "test", {}, size, lambda a: a, torch.device("cpu"))
    choice = choose_layer(subject, size)
    assert (choice.name, choice.cells) == (layer, cells)
    sides = [min(s) for _, s in choice.candidates]
    if max(sides) >= MIN_CELLS:
        later = [n for n, s in choice.candidates[[n for n, _ in choice.candidates].index(layer) + 1:]]
        assert all(min(dict(choice.candidates)[n]) < MIN_CELLS for n in later)
    assert choose_layer(subject, size, layer="trunk.layer2").name == "image_encoder.trunk.layer2"
    with pytest.raises(ConfigError, match="unknown layer"):
        choose_layer(subject, size, layer="trunk.layer9")


def test_unreadable_images_get_a_row_with_the_reason(runs, tmp_path):
    from PIL import Image

    from radpair_train.cli import main

    good = tmp_path / "good.png"
    Image.fromarray((np.arange(80 * 80) % 251).astype(np.uint8).reshape(80, 80)).save(good)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    out = tmp_path / "ex"
    rc = main(["explain", "--checkpoint", str(runs["supervised"]), "--images", str(good), str(empty), str(notes),
               str(truncated), str(tmp_path / "missing.png"), "--out", str(out), "--no-progress"])
    assert rc == 0
    data = _listed(out)
    rows = {Path(i["input"]).name: i for i in data["items"]}
    assert len(rows) == 5 and rows["good.png"]["status"] == "ok" and rows["good.png"]["files"]
    for name in ("empty.png", "notes.txt", "truncated.png", "missing.png"):
        assert rows[name]["status"] == "unreadable" and rows[name]["reason"], name
    assert "empty" in rows["empty.png"]["reason"] and "no such file" in rows["missing.png"]["reason"]
    html = (out / "index.html").read_text()
    assert "notes.txt" in html and "unreadable" in html
