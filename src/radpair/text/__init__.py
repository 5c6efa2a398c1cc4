"""Text tooling: tokenizers trained offline on report text (WordPiece, or one token per
word), and word vectors aligned to a tokenizer's vocabulary."""

from radpair.text.tokenizer import load_tokenizer, train_wordpiece_tokenizer
from radpair.text.word_tokenizer import train_word_tokenizer
from radpair.text.word_vectors import load_word_vectors, make_word_vectors

__all__ = ["load_tokenizer", "load_word_vectors", "make_word_vectors", "train_word_tokenizer",
           "train_wordpiece_tokenizer"]
