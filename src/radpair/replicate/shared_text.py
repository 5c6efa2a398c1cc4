"""The tokenizer and word vectors a paper's pretraining runs read reports with.

Every method of a paper reads text through one tokenizer, trained once on the main
corpus's training reports, so that the runs (and the reports they write) share one
vocabulary. Most papers take radpair's WordPiece tokenizer (3,000 tokens). TieNet (§5)
reads and writes over a *word* vocabulary (every training word seen at least twice, the
rest out of vocabulary) and starts its word embedding from word2vec vectors. A method
asks for these in its settings (``docs/replicate.md``)::

    vocabulary: {kind: word, min_count: 2}   # kind wordpiece (default) | word; size: a cap
    word_vectors: {dim: 200, seed: 0}        # word2vec on the training reports; dim = word_dim

**Stamps.** The tokenizer folder and each run's ``DONE`` record what they were made
from, so a change is redone instead of silently reused. Settings equal to the WordPiece
default add nothing to a stamp (:func:`tokenizer_stamp`, :meth:`SharedText.for_run`):
the runs of papers that do not ask for words keep the stamps they were finished under.
Anything else joins the stamp, so switching the kind, the minimum count or the vectors
redoes the runs that read them.

Nothing here imports torch or gensim at import time: ``radpair replicate --list`` and
the paper-file tests read the settings without them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from radpair.errors import ConfigError
from radpair.package.files import sha256_file

# what `radpair replicate` trained before papers could choose (train_wordpiece_tokenizer's
# min_frequency default is 2); settings equal to this leave every stamp as it was
WORDPIECE_DEFAULT: Mapping[str, Any] = MappingProxyType({"kind": "wordpiece", "size": 3000, "min_count": 2})
# word2vec settings a paper may leave out: radpair word-vectors' defaults
WORD2VEC_DEFAULTS: Mapping[str, int] = MappingProxyType({"seed": 0, "epochs": 5, "window": 5})


def method_vocabulary(spec, mode: str) -> dict[str, Any]:
    """The tokenizer settings one method asks for in ``mode``, with the defaults filled in."""
    raw = spec.settings(mode).get("vocabulary") or {}
    kind = raw.get("kind") or "wordpiece"
    # WordPiece needs a size (the runner's 3000 unless stated); a word vocabulary keeps every
    # word seen min_count times unless a size caps it
    size = raw.get("size") or (WORDPIECE_DEFAULT["size"] if kind == "wordpiece" else None)
    return {"kind": kind, "size": size, "min_count": int(raw.get("min_count") or WORDPIECE_DEFAULT["min_count"])}


def describe_vocabulary(settings: Mapping[str, Any]) -> str:
    cap = f", at most {settings['size']} tokens" if settings.get("size") else ""
    if settings["kind"] == "word":
        return f"words seen >= {settings['min_count']} times{cap}"
    return f"WordPiece{cap}, pairs seen >= {settings['min_count']} times"


def paper_vocabulary(paper, mode: str) -> dict[str, Any]:
    """The one tokenizer setting all of the paper's methods agree on in ``mode``.

    Methods that state no ``vocabulary`` ask for the WordPiece default, so a paper that
    mixes a word-vocabulary method with one that says nothing fails here, before any
    work, naming the methods of each side (state the same ``vocabulary`` in every method)."""
    asked: dict[str, list[str]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for spec in paper.methods:
        s = method_vocabulary(spec, mode)
        key = json.dumps(s, sort_keys=True)
        asked.setdefault(key, []).append(spec.id)
        settings[key] = s
    if len(asked) > 1:
        sides = "; ".join(f"{describe_vocabulary(settings[k])} ({', '.join(ids)})" for k, ids in asked.items())
        raise ConfigError(f"{paper.path}: the methods of paper {paper.name!r} share one tokenizer, but their {mode} "
                          f"'vocabulary' settings differ: {sides}. State the same vocabulary in every method "
                          "(methods without one take the WordPiece default)")
    return next(iter(settings.values()), dict(WORDPIECE_DEFAULT))


def tokenizer_stamp(corpus_stamp: str, settings: Mapping[str, Any]) -> str:
    """What the tokenizer folder was trained from: the corpus alone for the WordPiece
    default (the stamp written before papers could choose), else the corpus and the settings."""
    if dict(settings) == dict(WORDPIECE_DEFAULT):
        return corpus_stamp
    return json.dumps({"corpus": corpus_stamp, "tokenizer": dict(settings)}, sort_keys=True)


def train_tokenizer(corpus, folder: Path, settings: Mapping[str, Any], corpus_stamp: str) -> Path:
    """``folder`` holding the tokenizer ``settings`` ask for, trained on the corpus's
    training reports unless its stamp (``corpus_meta.json``) says it already is.

    A stale folder is emptied first, so that no file of another tokenizer (another kind,
    or a transformers version that saved ``vocab.txt``) is read as part of the new one."""
    from radpair.text import train_word_tokenizer, train_wordpiece_tokenizer

    stamp = folder / "corpus_meta.json"
    wanted = tokenizer_stamp(corpus_stamp, settings)
    if (folder / "tokenizer.json").is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return folder
    if folder.is_dir():
        shutil.rmtree(folder)
    texts = corpus.split_index("train")["report"].astype(str).tolist()
    if settings["kind"] == "word":
        train_word_tokenizer(texts, folder, min_count=int(settings["min_count"]), max_vocab_size=settings["size"])
    else:
        train_wordpiece_tokenizer(texts, folder, vocab_size=int(settings["size"] or WORDPIECE_DEFAULT["size"]),
                                  min_frequency=int(settings["min_count"]))
    stamp.write_text(wanted)
    return folder


def method_word_vectors(paper, spec, mode: str, method_cfg) -> dict[str, Any] | None:
    """The word2vec settings one run asks for (``dim`` resolved), or ``None``.

    ``method_cfg`` is the run's resolved method config: the vectors start its word
    embedding, so their width must be its ``word_dim`` (a stated ``dim`` that differs
    fails, naming both). A variant that reads no text (``reads_text`` false: TieNet's
    image-only classifier) has no word embedding and gets no vectors."""
    raw = spec.settings(mode).get("word_vectors")
    if raw is None:
        return None
    where = f"{paper.path}: method {spec.id!r} {mode} setting word_vectors"
    if not hasattr(method_cfg, "word_vectors") or not hasattr(method_cfg, "word_dim"):
        raise ConfigError(f"{where}: method {spec.method!r} has no word embedding to start from word vectors (its "
                          "config has no word_vectors / word_dim keys)")
    if not getattr(method_cfg, "reads_text", True):
        return None
    word_dim = int(method_cfg.word_dim)
    dim = raw.get("dim")
    if dim is not None and int(dim) != word_dim:
        raise ConfigError(f"{where}: dim is {dim}, but the method's word_dim is {word_dim} in this mode; the vectors "
                          f"start the word embedding, so set word_vectors.dim: {word_dim} (or leave it out), or "
                          f"method_options.word_dim: {dim}")
    return {"kind": "word2vec", "dim": word_dim,
            **{k: int(raw[k]) if raw.get(k) is not None else v for k, v in WORD2VEC_DEFAULTS.items()}}


def require_word2vec() -> None:
    """Fail before any work when word vectors are asked for and gensim is missing."""
    if importlib.util.find_spec("gensim") is None:
        from radpair.text.word_vectors import EXTRA

        raise ConfigError(f"word_vectors settings train word2vec, which needs gensim: pip install 'radpair[{EXTRA}]'")


def vectors_name(settings: Mapping[str, Any]) -> str:
    """File stem of one set of vectors: its dimension and seed, and any other setting that
    is not the default (one file per tokenizer, dimension and seed)."""
    extra = "".join(f"-{k}{settings[k]}" for k in ("epochs", "window") if settings[k] != WORD2VEC_DEFAULTS[k])
    return f"word2vec-{settings['dim']}d-seed{settings['seed']}{extra}"


def train_word_vectors(corpus, tokenizer: Path, folder: Path, settings: Mapping[str, Any], stamp_of_tokenizer: str,
                       log=print) -> Path:
    """``folder/<vectors_name>.safetensors``: word2vec on the corpus's training reports,
    aligned to ``tokenizer`` (:func:`radpair.text.make_word_vectors`), trained unless its
    stamp (the tokenizer's stamp and vocabulary, the settings) says it already is."""
    from radpair.text import load_tokenizer, make_word_vectors
    from radpair.text.word_vectors import vocabulary_fingerprint

    name = vectors_name(settings)
    path = folder / f"{name}.safetensors"
    stamp_file = folder / f"{name}.stamp"
    tok = load_tokenizer(tokenizer)
    stamp = json.dumps({"tokenizer": stamp_of_tokenizer, "vocab_sha256": vocabulary_fingerprint(tok),
                        "settings": dict(settings)}, sort_keys=True)
    if path.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return path
    texts = corpus.split_index("train")["report"].astype(str).tolist()
    log(f"training {settings['dim']}-d word2vec on {len(texts)} training reports -> {path}")
    folder.mkdir(parents=True, exist_ok=True)
    make_word_vectors(tok, path, texts=texts, dim=int(settings["dim"]), seed=int(settings["seed"]),
                      epochs=int(settings["epochs"]), window=int(settings["window"]),
                      source={"corpus": str(corpus.root), "split": "train", "reports": len(texts),
                              "tokenizer": str(tokenizer)})
    stamp_file.write_text(stamp)
    return path


@dataclass(frozen=True)
class SharedText:
    """What the paper's runs read text with: the tokenizer folder and its settings, and the
    word vectors of each run that asks for them (``(method id, candidate name)`` -> (settings, file))."""

    tokenizer: Path
    vocabulary: Mapping[str, Any] = field(default_factory=lambda: dict(WORDPIECE_DEFAULT))
    vectors: Mapping[tuple[str, str], tuple[Mapping[str, Any], Path]] = field(default_factory=dict)

    def for_run(self, method_id: str, candidate: str = "") -> tuple[list[str], dict[str, Any]]:
        """(overrides, stamp fields) of one run: ``text_encoder.tokenizer`` and, with
        vectors, ``method.word_vectors``; the stamp fields are empty for the WordPiece
        default without vectors, so such runs keep their DONE stamps. Paths stay out of
        the stamp (a moved output folder is the same run); the vectors' content is in it."""
        overrides = [f"text_encoder.tokenizer={self.tokenizer}"]
        stamp: dict[str, Any] = {}
        if dict(self.vocabulary) != dict(WORDPIECE_DEFAULT):
            stamp["tokenizer"] = dict(self.vocabulary)
        found = self.vectors.get((method_id, candidate))
        if found is not None:
            settings, path = found
            overrides.append(f"method.word_vectors={path}")
            stamp["word_vectors"] = {**settings, "sha256": sha256_file(path)}
        return overrides, stamp


__all__ = ["WORD2VEC_DEFAULTS", "WORDPIECE_DEFAULT", "SharedText", "describe_vocabulary", "method_vocabulary",
           "method_word_vectors", "paper_vocabulary", "require_word2vec", "tokenizer_stamp", "train_tokenizer",
           "train_word_vectors", "vectors_name"]
