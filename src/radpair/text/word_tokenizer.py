"""Word-level tokenizers: one token per word seen often enough, [UNK] for the rest.

TieNet (Wang et al. 2018, §5) writes and reads reports over a *word* vocabulary: every
word of the training reports seen at least twice, the rarer ones replaced by an
out-of-vocabulary token, the report framed by <START> and <END>. A WordPiece vocabulary
(:func:`radpair.text.train_wordpiece_tokenizer`) spells a rare word in pieces instead, so
word vectors (word2vec) would only fit its whole-word tokens. This module trains the
paper's kind with ``tokenizers``' own ``WordLevel`` model and trainer and saves it in the
same Hugging Face folder layout as the WordPiece tokenizer, so that
:func:`radpair.text.load_tokenizer` and every consumer of a tokenizer folder read it
unchanged:

* the **special tokens** are the WordPiece tokenizer's, with the same ids ([PAD] 0,
  [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4): [UNK] is the out-of-vocabulary token, and
  [CLS] / [SEP] frame every encoded report, which the report writers read as
  <START> / <END> (:func:`radpair.methods.base.special_token_ids`);
* **words** are split as the WordPiece tokenizer splits them (``BertNormalizer``:
  lower-casing, accents stripped, control characters dropped; ``BertPreTokenizer``:
  whitespace and every punctuation mark on its own), so both kinds see the same words and
  punctuation marks become words of their own (". , :" are frequent in reports);
* **decoding** joins words with spaces and closes the gap before punctuation, as the
  WordPiece tokenizer's decoder does, so generated reports are written and scored the
  same way whichever vocabulary wrote them.

The trainer orders words by descending count, ties by the word itself, so the vocabulary
(and every id) is the same in every process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from radpair.errors import ConfigError, DataError
from radpair.text.tokenizer import SPECIAL_TOKENS, check_tokenizer

# no cap: the paper keeps every word seen min_count times (15,472 on ChestX-ray14)
_NO_CAP = 2**31 - 1


def train_word_tokenizer(texts: Iterable[str], out_dir: str | Path, min_count: int = 2,
                         max_vocab_size: int | None = None):
    """Train a lower-cased word-level tokenizer on ``texts`` and save it to ``out_dir``.

    Keeps every word seen at least ``min_count`` times (the paper: twice), the most
    frequent first; ``max_vocab_size`` (special tokens included) caps it, ``None`` keeps
    them all. Returns the loaded ``transformers`` tokenizer.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    if int(min_count) < 1:
        raise ConfigError(f"min_count must be >= 1, got {min_count}")
    if max_vocab_size is not None and int(max_vocab_size) <= len(SPECIAL_TOKENS):
        raise ConfigError(f"max_vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {max_vocab_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordLevelTrainer(vocab_size=int(max_vocab_size or _NO_CAP), min_frequency=int(min_count),
                               special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise DataError(f"no word is seen {min_count} times in the training texts (training {out_dir}); "
                        "lower min_count or check the texts")
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    if [ids[t] for t in SPECIAL_TOKENS] != list(range(len(SPECIAL_TOKENS))):
        raise DataError(f"special tokens did not get ids 0..{len(SPECIAL_TOKENS) - 1}: {ids}")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    # no word starts with "##" (the pre-tokenizer splits '#'), so this decoder only joins
    # words with spaces and tidies punctuation, exactly as the WordPiece tokenizer decodes
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(str(out_dir))
    check_tokenizer(tokenizer, str(out_dir))
    return tokenizer


__all__ = ["train_word_tokenizer"]
