"""Text tooling: WordPiece tokenizers trained offline on report text."""

from radpair.text.tokenizer import load_tokenizer, train_wordpiece_tokenizer

__all__ = ["load_tokenizer", "train_wordpiece_tokenizer"]
