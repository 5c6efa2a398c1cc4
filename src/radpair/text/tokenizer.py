"""WordPiece tokenizers trained on report text and saved in Hugging Face layout.

Pretrained clinical BERTs ship their own tokenizer; for random-init text encoders we
train one on the corpus's reports (seconds for 20k reports) and save it with
``save_pretrained`` so that the same ``from_pretrained(folder)`` call loads either kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from radpair.errors import DataError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int = 4000, min_frequency: int = 2
):
    """Train a lower-cased BERT WordPiece tokenizer on ``texts`` and save it to ``out_dir``.

    The vocabulary is learned by :mod:`radpair.text.wordpiece_training`, which gives the
    same vocabulary in every process (the ``tokenizers`` trainer does not); encoding is
    ``tokenizers``' own BERT WordPiece pipeline.
    """
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from radpair.text.wordpiece_training import count_words, learn_vocabulary

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shell = BertWordPieceTokenizer(lowercase=True, strip_accents=True, clean_text=True)
    words = count_words(texts, shell._tokenizer.normalizer, shell._tokenizer.pre_tokenizer)
    if not words:
        raise DataError(f"no words to learn a vocabulary from (training {out_dir})")
    tokens = learn_vocabulary(words, vocab_size, SPECIAL_TOKENS, min_frequency=min_frequency)
    wp = BertWordPieceTokenizer({t: i for i, t in enumerate(tokens)}, lowercase=True, strip_accents=True,
                                clean_text=True)
    tokenizer = BertTokenizerFast(tokenizer_object=wp._tokenizer, do_lower_case=True)
    tokenizer.add_special_tokens(
        {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    )
    tokenizer.save_pretrained(str(out_dir))
    check_tokenizer(tokenizer, str(out_dir))
    return tokenizer


def load_tokenizer(path: str | Path):
    """Load a tokenizer folder (ours or a pretrained model's) without touching the network."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"tokenizer folder {str(path)!r} does not exist; train one with `radpair tokenizer`")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    check_tokenizer(tokenizer, str(path))
    return tokenizer


def check_tokenizer(tokenizer, source: str) -> None:
    """Fail loudly if the vocabulary was not loaded (a silent transformers-5 trap).

    The probe is made of the tokenizer's own words, not a fixed English phrase: a word-level
    vocabulary (TieNet's) of telegraphic or non-English reports may hold none of the words
    of any fixed sentence and still be perfectly valid."""
    special = set(tokenizer.all_special_tokens)
    words = sorted(t for t in tokenizer.get_vocab() if t not in special and not t.startswith("##") and t.isalpha())
    if not words:
        raise DataError(f"tokenizer at {source!r} holds no words besides its special tokens: its vocabulary did "
                        "not load")
    probe = " ".join(words[:: max(1, len(words) // 5)][:5])
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if not ids or all(i == unk for i in ids):
        raise DataError(f"tokenizer at {source!r} maps every word to [UNK]: its vocabulary did not load")
