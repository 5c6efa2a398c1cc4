"""TieNet's report vocabulary and word2vec start (§5): the word-level tokenizer keeps words
seen min_count times and loads like any tokenizer folder; word2vec is repeatable under its
seed and lands on the right token ids; TieNet starts its word embedding from the matrix
and trains it; mismatched matrices are refused naming the file. gensim-only parts skip
without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radpair.errors import ConfigError, DataError
from radpair.methods import BuildContext, DatasetStats, build_method
from radpair.methods.base import special_token_ids
from radpair.models.config import ImageEncoderConfig, TextEncoderConfig
from radpair.text import load_tokenizer, make_word_vectors, train_word_tokenizer
from radpair.text.tokenizer import SPECIAL_TOKENS
from radpair.text.word_vectors import align_vectors, load_word_vectors, summary_path, train_word2vec

# "." 6 times, "the" 5, "heart" and "is" 3, "normal", "effusion", "lungs" twice, "zebra" once
TEXTS = ["The heart is normal in size.", "The heart is enlarged. Small effusion.", "No effusion; the heart is normal.",
         "Zebra sign in the lungs.", "The lungs are clear."]
COLUMNS = ["a", "b"]
TINY = {"name": "tienet", "grid_size": None, "grid_channels": 8, "word_dim": 8, "lstm_size": 16,
        "spatial_attention_dim": 8, "aete_rows": 2, "aete_hidden": 12, "label_task": None, "label_columns": COLUMNS,
        "text_max_length": 24}


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory):
    return train_word_tokenizer(TEXTS, tmp_path_factory.mktemp("wordtok") / "tok", min_count=2)


def _words(tok) -> set[str]:
    return set(tok.get_vocab()) - set(SPECIAL_TOKENS)


# -- the word-level tokenizer ---------------------------------------------------------------------

def test_word_tokenizer_keeps_words_seen_min_count_times(tmp_path, word_tok):
    assert {"the", "heart", "is", "normal", ".", "effusion", "lungs"} <= _words(word_tok)
    assert not {"zebra", "enlarged", "clear", ";"} & _words(word_tok)  # seen once
    assert _words(train_word_tokenizer(TEXTS, tmp_path / "t3", min_count=3)) == {"the", "heart", "is", "."}
    ids = word_tok("Zebra heart", add_special_tokens=False)["input_ids"]
    assert ids == [word_tok.unk_token_id, word_tok.convert_tokens_to_ids("heart")]
    assert word_tok.convert_tokens_to_ids("heart") != word_tok.unk_token_id
    # most frequent words first, after the special tokens
    assert word_tok.convert_ids_to_tokens(list(range(7))) == [*SPECIAL_TOKENS, ".", "the"]


def test_word_tokenizer_round_trips_through_load_tokenizer_with_the_special_tokens(tmp_path, word_tok):
    folder = tmp_path / "tok"
    made = train_word_tokenizer(TEXTS, folder, min_count=2)
    loaded = load_tokenizer(folder)
    assert loaded.get_vocab() == made.get_vocab() == word_tok.get_vocab()  # same vocabulary in a new folder
    assert [loaded.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (loaded.pad_token, loaded.unk_token, loaded.cls_token, loaded.sep_token, loaded.mask_token) == tuple(
        SPECIAL_TOKENS)
    assert special_token_ids(loaded, "tienet") == (0, 2, 3)  # [PAD]; [CLS] / [SEP] read as <START> / <END>
    enc = loaded(["The HEART is normal, zebra.", "Effusion."], padding=True)
    tokens = loaded.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens == ["[CLS]", "the", "heart", "is", "normal", "[UNK]", "[UNK]", ".", "[SEP]"]
    assert enc["input_ids"][1][-1] == loaded.pad_token_id and enc["attention_mask"][1][-1] == 0
    assert loaded.decode(enc["input_ids"][0], skip_special_tokens=True) == "the heart is normal."


def test_word_tokenizer_refuses_a_vocabulary_of_nothing(tmp_path):
    with pytest.raises(DataError, match="no word is seen 7 times"):
        train_word_tokenizer(TEXTS, tmp_path / "t", min_count=7)
    with pytest.raises(ConfigError, match="min_count"):
        train_word_tokenizer(TEXTS, tmp_path / "t", min_count=0)


# -- word2vec -------------------------------------------------------------------------------------

def test_word2vec_is_repeatable_under_its_seed_and_touches_no_global_rng(word_tok):
    pytest.importorskip("gensim")
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a = train_word2vec(TEXTS * 5, word_tok, 12, seed=1)
    b = train_word2vec(TEXTS * 5, word_tok, 12, seed=1)
    c = train_word2vec(TEXTS * 5, word_tok, 12, seed=2)
    assert a.index_to_key == b.index_to_key and np.array_equal(a.vectors, b.vectors)
    assert not np.array_equal(a.vectors, c.vectors)
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.get_rng_state(), torch_state)
    assert {"heart", "zebra", "."} <= set(a.index_to_key)  # words as the tokenizer splits them, lower-cased


def test_word2vec_matrix_rows_are_the_vectors_of_the_token_ids(tmp_path, word_tok):
    pytest.importorskip("gensim")
    out = tmp_path / "v.safetensors"
    summary = make_word_vectors(word_tok, out, texts=TEXTS * 5, dim=12, seed=1)
    kv = train_word2vec(TEXTS * 5, word_tok, 12, seed=1)
    wv = load_word_vectors(out)
    assert tuple(wv.weight.shape) == (len(word_tok), 12)
    heart = word_tok.convert_tokens_to_ids("heart")
    assert torch.equal(wv.weight[heart], torch.tensor(kv["heart"]))
    assert wv.has_vector[heart] and not wv.has_vector[:len(SPECIAL_TOKENS)].any()
    assert not wv.weight[word_tok.pad_token_id].any()
    on_disk = json.loads(summary_path(out).read_text())
    assert on_disk == summary
    assert summary["with_vector"] == summary["words"] == len(word_tok) - len(SPECIAL_TOKENS)
    assert summary["coverage"] == 1.0 and summary["source"]["kind"] == "word2vec" and summary["source"]["seed"] == 1


@pytest.mark.parametrize("binary", [False, True])
def test_a_users_vectors_file_is_aligned_by_word_case_insensitively(tmp_path, word_tok, binary):
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(4)
    kv.add_vectors(["Heart", "heart", "Normal", "pneumonia"],
                   np.arange(16, dtype=np.float32).reshape(4, 4))
    path = tmp_path / ("pubmed.bin" if binary else "pubmed.txt")
    kv.save_word2vec_format(str(path), binary=binary)
    summary = make_word_vectors(word_tok, tmp_path / "m.safetensors", vectors_file=path)
    wv = load_word_vectors(tmp_path / "m.safetensors")
    ids = {w: word_tok.convert_tokens_to_ids(w) for w in ("heart", "normal", "the")}
    assert wv.weight[ids["heart"]].tolist() == [4.0, 5.0, 6.0, 7.0]  # the exact key wins over "Heart"
    assert wv.weight[ids["normal"]].tolist() == [8.0, 9.0, 10.0, 11.0]  # found by its lower-cased form
    assert not wv.has_vector[ids["the"]] and not wv.weight[ids["the"]].any()
    assert summary["with_vector"] == 2 and summary["source"]["file"] == str(path)
    assert "the" in summary["without_vector_examples"]
    with pytest.raises(DataError, match="holds 4-d vectors, not the 200-d"):
        make_word_vectors(word_tok, tmp_path / "m2.safetensors", vectors_file=path, dim=200)


def test_a_bad_vectors_file_is_named(tmp_path, word_tok):
    pytest.importorskip("gensim")
    bad = tmp_path / "broken.txt"
    bad.write_text("this is not a word2vec file\n")
    with pytest.raises(DataError, match="broken.txt"):
        make_word_vectors(word_tok, tmp_path / "m.safetensors", vectors_file=bad)
    with pytest.raises(DataError, match="missing.bin"):
        make_word_vectors(word_tok, tmp_path / "m.safetensors", vectors_file=tmp_path / "missing.bin")


def test_without_gensim_the_error_names_the_extra(monkeypatch, word_tok):
    import sys

    monkeypatch.setitem(sys.modules, "gensim", None)  # import gensim now raises ImportError
    with pytest.raises(ConfigError, match=r"radpair\[word2vec\]"):
        train_word2vec(TEXTS, word_tok, 8)


# -- TieNet starting from the vectors -------------------------------------------------------------

def _model(tok, training=True, **kw):
    torch.manual_seed(0)
    parts = BuildContext(ImageEncoderConfig(name="resnet_tiny"), TextEncoderConfig(max_length=24), tok,
                         training=training)
    stats = DatasetStats(n_rows=4, n_labelled=4, class_counts=np.array([2, 1]), class_names=COLUMNS)
    return build_method({**TINY, **kw}, parts, stats)


@pytest.fixture(scope="module")
def vectors8(tmp_path_factory, word_tok):
    pytest.importorskip("gensim")
    out = tmp_path_factory.mktemp("vec") / "w2v8.safetensors"
    make_word_vectors(word_tok, out, texts=TEXTS * 5, dim=8, seed=0)
    return out


def test_tienet_starts_from_the_vectors_and_trains_them(word_tok, vectors8):
    wv = load_word_vectors(vectors8)
    plain = _model(word_tok).decoder.embed.weight.detach().clone()
    model = _model(word_tok, word_vectors=str(vectors8))
    emb = model.decoder.embed.weight
    has = wv.has_vector
    assert has.sum() > 0 and torch.equal(emb[has].detach(), wv.weight[has])
    assert torch.equal(emb[~has].detach(), plain[~has])  # tokens without a vector keep the seeded init
    assert not emb[word_tok.pad_token_id].any() and emb.requires_grad
    enc = word_tok(["The heart is normal.", "Small effusion; the lungs are clear."], padding=True, return_tensors="pt")
    batch = {"images": torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)),
             "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
             "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "label_mask": torch.ones(2, 2)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    model(batch)["loss"].backward()
    opt.step()
    heart = word_tok.convert_tokens_to_ids("heart")
    assert not torch.equal(emb[heart].detach(), wv.weight[heart])  # evolved along with the LSTM


def test_word_vectors_that_do_not_fit_are_refused_naming_the_file(tmp_path, word_tok, vectors8):
    with pytest.raises(ConfigError, match=r"w2v8\.safetensors.*8-d, but method\.word_dim is 16"):
        _model(word_tok, word_vectors=str(vectors8), word_dim=16)
    other = train_word_tokenizer(TEXTS, tmp_path / "t1", min_count=1)  # more words: another vocabulary size
    with pytest.raises(ConfigError, match=rf"w2v8\.safetensors.*{len(word_tok)} rows, but the tokenizer has "
                                          rf"{len(other)} tokens"):
        _model(other, word_vectors=str(vectors8))
    same_size = train_word_tokenizer([t.replace("lungs", "lung") for t in TEXTS], tmp_path / "t2", min_count=2)
    assert len(same_size) == len(word_tok)
    with pytest.raises(ConfigError, match=r"w2v8\.safetensors.*another vocabulary"):
        _model(same_size, word_vectors=str(vectors8))
    with pytest.raises(ConfigError, match="nowhere.safetensors"):
        _model(word_tok, word_vectors=str(tmp_path / "nowhere.safetensors"))
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(DataError, match="foreign.safetensors.*not a radpair word-vectors matrix"):
        _model(word_tok, word_vectors=str(foreign))
    with pytest.raises(ConfigError, match="method.word_vectors"):
        _model(word_tok, word_vectors="")
    # a finished run is rebuilt to load its weights: the start vectors are not read
    assert _model(word_tok, training=False, word_vectors=str(tmp_path / "gone.safetensors")) is not None


# -- the commands ---------------------------------------------------------------------------------

def test_tokenizer_and_word_vectors_commands(tmp_path, random_corpus):
    pytest.importorskip("gensim")
    from radpair_train.cli import main

    tok_dir, out = tmp_path / "tok", tmp_path / "tok" / "word2vec.safetensors"
    assert main(["tokenizer", "--corpus", str(random_corpus.root), "--out", str(tok_dir), "--kind", "word"]) == 0
    tok = load_tokenizer(tok_dir)
    assert {"edema", "heart", "findings", ":"} <= _words(tok) and len(tok) < 20
    assert main(["word-vectors", "--tokenizer", str(tok_dir), "--corpus", str(random_corpus.root), "--out", str(out),
                 "--dim", "8", "--seed", "3"]) == 0
    summary = json.loads(summary_path(out).read_text())
    assert summary["dim"] == 8 and summary["coverage"] == 1.0 and summary["source"]["split"] == "train"
    assert main(["word-vectors", "--tokenizer", str(tok_dir), "--vectors", str(tmp_path / "none.txt"),
                 "--out", str(out)]) == 2


def test_a_run_trains_from_the_vectors_and_writes_reports_without_them(tmp_path):
    """Through the loop: the config key reaches the model, and a finished run is rebuilt
    (to write reports in words) without the start vectors."""
    pytest.importorskip("gensim")
    import warnings

    from radpair.config import load_config
    from radpair.data.synth import generate_corpus
    from radpair.generation.decoding import DecodingConfig
    from radpair.generation.generate import generate_reports
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    corpus = generate_corpus(tmp_path / "corpus", n_images=32, size=64, seed=3, workers=1)
    texts = corpus.split_index("train")["report"].astype(str).tolist()
    tok = train_word_tokenizer(texts, tmp_path / "tok")
    vec = tmp_path / "w2v.safetensors"
    make_word_vectors(tok, vec, texts=texts, dim=8, seed=0)
    over = {"data.corpus": str(tmp_path / "corpus"), "text_encoder.tokenizer": str(tmp_path / "tok"),
            "train.out_dir": str(tmp_path / "run"), "image_encoder.name": "resnet_tiny", "data.batch_size": 8,
            "train.progress": False, "train.threads": 1, "train.device": "cpu", "train.max_steps": 2,
            "text_encoder.max_length": 32, "method.name": "tienet", "method.label_task": "findings7",
            "method.word_vectors": str(vec), "method.text_max_length": 32,
            **{f"method.{k}": v for k, v in TINY.items() if k not in ("name", "label_task", "label_columns",
                                                                       "text_max_length")}}
    cfg = load_config(PretrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in over.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(cfg)
        wv = load_word_vectors(vec)
        assert torch.equal(trainer.model.decoder.embed.weight[wv.has_vector].detach(), wv.weight[wv.has_vector])
        assert trainer.fit().steps == 2
        vec.unlink()  # the finished run's weights hold the embedding now
        out = generate_reports(tmp_path / "run", tmp_path / "corpus", limit=2,
                               decoding=DecodingConfig(max_length=6))
    assert len(out.frame) == 2 and all(isinstance(t, str) for t in out.frame["report"])
    written = load_tokenizer(tmp_path / "tok")(out.frame["report"].tolist(), add_special_tokens=False)["input_ids"]
    assert all(tok.unk_token_id not in ids for ids in written)  # decoded words read back as themselves


def test_a_word_vocabulary_without_common_english_words_loads(tmp_path):
    """The load check probes with the vocabulary's own words, not a fixed English phrase."""
    folder = tmp_path / "terse"
    train_word_tokenizer(["Pleural effusion left.", "Pleural effusion right.", "Cardiomegaly present."] * 2, folder,
                         min_count=2)
    tok = load_tokenizer(folder)
    assert tok.convert_tokens_to_ids("pleural") != tok.unk_token_id


def test_the_vectors_summary_never_overwrites_the_tokenizer_beside_it(tmp_path):
    pytest.importorskip("gensim")
    folder = tmp_path / "tok"
    tok = train_word_tokenizer(TEXTS, folder, min_count=2)
    before = (folder / "tokenizer.json").read_bytes()
    make_word_vectors(tok, folder / "tokenizer.safetensors", texts=TEXTS, dim=8, seed=0, epochs=1)
    assert (folder / "tokenizer.json").read_bytes() == before and (folder / "tokenizer.vectors.json").is_file()
    with pytest.raises(ConfigError, match="must end in .safetensors"):
        make_word_vectors(tok, folder / "vectors.bin", texts=TEXTS, dim=8)
