"""Word vectors aligned to a tokenizer's vocabulary: word2vec trained here, or a user's file.

TieNet (§5) starts its word embedding from 200-d word2vec vectors that gensim learnt on
PubMed articles and lets them evolve with the LSTM. Nothing here may download at run time,
so the stand-in for PubMed is the run's own training reports (:func:`train_word2vec`);
a user who has PubMed (or any) vectors passes their file instead (:func:`load_vectors`,
the word2vec text or binary format that gensim's ``KeyedVectors`` reads).

Either way the vectors become a matrix with one row per token id of a tokenizer
(:func:`align_vectors`), written as ``safetensors`` plus a small JSON of what it covers
(:func:`write_word_vectors`); :func:`load_word_vectors` reads it back without gensim, so
a method that starts from the matrix needs only the file. The file records a fingerprint
of the vocabulary it was aligned to, so a matrix is never laid on another tokenizer's ids.

gensim is optional (``pip install 'radpair[word2vec]'``): only training and reading a
vectors file import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from radpair.errors import ConfigError, DataError

EXTRA = "word2vec"
FORMAT = "radpair.word_vectors/1"
WEIGHT_KEY = "weight"
MASK_KEY = "has_vector"


def _gensim():
    """gensim, or a clear error naming the extra that installs it."""
    try:
        import gensim  # noqa: F401
        from gensim.models import KeyedVectors, Word2Vec
    except ImportError:
        raise ConfigError(f"word2vec vectors need gensim, which is not installed: pip install 'radpair[{EXTRA}]'"
                          ) from None
    return Word2Vec, KeyedVectors


def summary_path(path: str | Path) -> Path:
    """The JSON written beside a matrix file (``vectors.safetensors`` -> ``vectors.vectors.json``).
    Not ``with_suffix(".json")``: a matrix named ``tokenizer.safetensors`` inside the
    tokenizer folder would overwrite the tokenizer's own ``tokenizer.json``."""
    return Path(path).with_suffix(".vectors.json")


def vocabulary_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's tokens in id order: equal exactly when ids mean the same tokens."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return hashlib.sha256("\n".join(str(t) for t in tokens).encode("utf-8")).hexdigest()


def report_words(texts: Iterable[str], tokenizer) -> list[list[str]]:
    """Each text as the words the tokenizer sees (its own normaliser and pre-tokeniser), so
    that word2vec learns vectors under the very spellings the vocabulary holds."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("word vectors need a fast (tokenizers-backed) tokenizer; load it with "
                          "radpair.text.load_tokenizer")
    norm, pre = backend.normalizer, backend.pre_tokenizer
    out = []
    for text in texts:
        if not text:
            continue
        text = norm.normalize_str(text) if norm is not None else text
        words = [w for w, _ in pre.pre_tokenize_str(text)] if pre is not None else text.split()
        if words:
            out.append(words)
    return out


def train_word2vec(texts: Iterable[str], tokenizer, dim: int = 200, *, window: int = 5, min_count: int = 1,
                   epochs: int = 5, seed: int = 0, skip_gram: bool = False):
    """gensim word2vec vectors (``KeyedVectors``) of the words of ``texts``.

    The stand-in for the paper's PubMed vectors: the run's training reports, split into
    words as ``tokenizer`` splits them. ``min_count`` 1 gives every vocabulary word a
    vector (the vocabulary itself keeps words seen twice). CBOW unless ``skip_gram``.

    Deterministic: gensim draws its initial vectors, negative samples, down-sampling and
    window shrinking from the model's own generators seeded by ``seed`` (no global RNG is
    touched), but with several worker threads the order in which sentences update the
    shared vectors depends on thread scheduling, so two runs differ. ``workers=1`` removes
    that; the reports of one corpus train in seconds, so nothing is lost.
    """
    word2vec, _ = _gensim()
    if int(dim) < 1 or int(epochs) < 1 or int(window) < 1 or int(min_count) < 1:
        raise ConfigError(f"word2vec needs dim, epochs, window and min_count >= 1 (got {dim}, {epochs}, {window}, "
                          f"{min_count})")
    sentences = report_words(texts, tokenizer)
    if not sentences:
        raise DataError("no words to train word2vec on (every text is empty)")
    model = word2vec(sentences=sentences, vector_size=int(dim), window=int(window), min_count=int(min_count),
                     sg=1 if skip_gram else 0, epochs=int(epochs), seed=int(seed), workers=1)
    if len(model.wv) == 0:
        raise DataError(f"word2vec kept no word: none is seen min_count={min_count} times")
    return model.wv


def load_vectors(path: str | Path, binary: bool | None = None):
    """A user's vectors file as gensim ``KeyedVectors``: the word2vec text format (``.txt``,
    ``.vec``, optionally ``.gz``) or binary format (``.bin``, ``.bin.gz``); ``binary`` None
    decides by the suffix."""
    _, keyed_vectors = _gensim()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"word vectors file {str(path)!r} does not exist")
    if binary is None:
        binary = path.name.endswith((".bin", ".bin.gz"))
    try:
        return keyed_vectors.load_word2vec_format(str(path), binary=binary)
    except Exception as exc:  # gensim raises ValueError, UnicodeDecodeError, EOFError ... on a bad file
        kind = "binary" if binary else "text"
        raise DataError(f"word vectors file {str(path)!r} is not in the word2vec {kind} format: "
                        f"{type(exc).__name__}: {exc}") from None


def align_vectors(vectors, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [V, dim] float32, has_vector [V] bool): row i is the vector of token i.

    A token takes the vector of the same word, else of the first word (the most frequent,
    in a word2vec file's order) whose lower-cased form equals it: the vocabulary is
    lower-cased, PubMed vectors usually are not. Special tokens ([PAD], [CLS], ...) and
    tokens without a vector (WordPiece ``##`` pieces, words the vectors lack) keep a zero
    row and ``has_vector`` False, so the model keeps its own initialisation there.
    """
    keys = vectors.index_to_key
    lower: dict[str, int] = {}
    for i, key in enumerate(keys):
        lower.setdefault(str(key).lower(), i)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    matrix = np.zeros((size, vectors.vector_size), dtype=np.float32)
    has = np.zeros(size, dtype=bool)
    for i, token in enumerate(tokens):
        if i in special or token is None:
            continue
        row = vectors.key_to_index.get(token)
        if row is None:
            row = lower.get(token.lower())
        if row is not None:
            matrix[i] = vectors.vectors[row]
            has[i] = True
    return matrix, has


def write_word_vectors(path: str | Path, matrix: np.ndarray, has_vector: np.ndarray, tokenizer,
                       source: dict[str, Any]) -> dict[str, Any]:
    """Write the aligned matrix to ``path`` (safetensors: ``weight``, ``has_vector``; the
    vocabulary's fingerprint in its metadata) and a summary JSON beside it; returns the summary."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"word vectors output {str(path)!r} must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    size, dim = matrix.shape
    fingerprint = vocabulary_fingerprint(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    words = size - len(special)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    missing = [t for i, t in enumerate(tokens) if not has_vector[i] and i not in special]
    summary = {"format": FORMAT, "matrix": path.name, "vocab_size": int(size), "dim": int(dim),
               "vocab_sha256": fingerprint, "with_vector": int(has_vector.sum()), "words": int(words),
               "coverage": round(float(has_vector.sum()) / max(words, 1), 6), "without_vector_examples": missing[:20],
               "source": source}
    save_file({WEIGHT_KEY: torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)),
               MASK_KEY: torch.from_numpy(has_vector.astype(np.uint8))}, str(path),
              metadata={"format": FORMAT, "vocab_sha256": fingerprint})
    summary_path(path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class WordVectors:
    """An aligned matrix read back: ``weight`` [V, dim] float32, ``has_vector`` [V] bool."""

    path: Path
    weight: Any  # torch.Tensor
    has_vector: Any  # torch.Tensor
    vocab_sha256: str

    def check(self, tokenizer, dim: int, dim_key: str = "word_dim") -> None:
        """Fail, naming the file, unless it was aligned to ``tokenizer`` at width ``dim``."""
        size, width = self.weight.shape
        where = f"word vectors {str(self.path)!r}"
        if size != len(tokenizer):
            raise ConfigError(f"{where} have {size} rows, but the tokenizer has {len(tokenizer)} tokens; align them "
                              "to this tokenizer (radpair word-vectors --tokenizer ...)")
        if width != int(dim):
            raise ConfigError(f"{where} are {width}-d, but {dim_key} is {dim}; set {dim_key}: {width} or make "
                              f"{dim}-d vectors")
        if self.vocab_sha256 != vocabulary_fingerprint(tokenizer):
            raise ConfigError(f"{where} were aligned to another vocabulary of the same size (fingerprint "
                              f"{self.vocab_sha256[:12]}); align them to this tokenizer")


def load_word_vectors(path: str | Path) -> WordVectors:
    """Read a matrix written by :func:`write_word_vectors` (no gensim needed)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"word vectors file {str(path)!r} does not exist; make it with `radpair word-vectors`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            if meta.get("format") != FORMAT or not {WEIGHT_KEY, MASK_KEY} <= names:
                raise DataError(f"{str(path)!r} is not a radpair word-vectors matrix (format {meta.get('format')!r}, "
                                f"tensors {sorted(names)}); make one with `radpair word-vectors`")
            weight, has = f.get_tensor(WEIGHT_KEY), f.get_tensor(MASK_KEY)
    except DataError:
        raise
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"cannot read word vectors {str(path)!r}: {type(exc).__name__}: {exc}") from None
    if weight.ndim != 2 or has.shape != (weight.shape[0],):
        raise DataError(f"word vectors {str(path)!r}: weight {tuple(weight.shape)} and has_vector "
                        f"{tuple(has.shape)} do not fit")
    return WordVectors(path, weight.float(), has.bool(), str(meta.get("vocab_sha256", "")))


def make_word_vectors(tokenizer, out: str | Path, *, texts: Iterable[str] | None = None,
                      vectors_file: str | Path | None = None, binary: bool | None = None, dim: int | None = None,
                      seed: int = 0, epochs: int = 5, window: int = 5, min_count: int = 1,
                      skip_gram: bool = False, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train word2vec on ``texts`` or read ``vectors_file`` (exactly one), align it to
    ``tokenizer`` and write the matrix to ``out``; returns the summary (coverage)."""
    if (texts is None) == (vectors_file is None):
        raise ConfigError("give either texts to train word2vec on or a vectors file, not both or neither")
    if Path(out).suffix != ".safetensors":  # checked before word2vec trains, not after
        raise ConfigError(f"word vectors output {str(out)!r} must end in .safetensors")
    if vectors_file is not None:
        vectors = load_vectors(vectors_file, binary)
        if dim is not None and vectors.vector_size != int(dim):
            raise DataError(f"word vectors file {str(vectors_file)!r} holds {vectors.vector_size}-d vectors, not "
                            f"the {dim}-d asked for")
        info = {"kind": "file", "file": str(vectors_file), "words_in_file": len(vectors)}
    else:
        vectors = train_word2vec(texts, tokenizer, 200 if dim is None else dim, window=window, min_count=min_count,
                                 epochs=epochs, seed=seed, skip_gram=skip_gram)
        info = {"kind": "word2vec", "dim": vectors.vector_size, "window": window, "min_count": min_count,
                "epochs": epochs, "seed": seed, "skip_gram": bool(skip_gram), "words_trained": len(vectors),
                "gensim": version("gensim")}
    matrix, has = align_vectors(vectors, tokenizer)
    return write_word_vectors(out, matrix, has, tokenizer, {**info, **(source or {})})


__all__ = ["EXTRA", "WordVectors", "align_vectors", "load_vectors", "load_word_vectors", "make_word_vectors",
           "report_words", "summary_path", "train_word2vec", "vocabulary_fingerprint", "write_word_vectors"]
