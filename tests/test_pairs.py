"""Batches served by PairDataset: chunked tokenisation and pread image reads give exactly
what the straightforward whole-corpus tokenisation and memory-map indexing gave."""

from __future__ import annotations

import numpy as np
import pytest

from radpair.data.pairs import PairDataset, select_report_text, tokenize_texts
from radpair.errors import DataError
from radpair.text import load_tokenizer


def test_chunked_tokens_match_one_call(random_corpus, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    texts = random_corpus.index["report"].tolist()
    texts[3] = ""  # an empty report still gets its special tokens
    texts[5] = "FINDINGS: " + " ".join(["edema"] * 300)  # truncated at max_length
    table = tokenize_texts(texts, tok, max_length=32, policy="findings", chunk=7)
    ref = tok(select_report_text(texts, "findings"), max_length=32, truncation=True, padding="max_length",
              return_tensors="np")
    assert table.ids.dtype == np.uint16 and table.ids.shape == (len(texts), 32)  # a 120-word vocabulary
    np.testing.assert_array_equal(table.lengths, ref["attention_mask"].sum(1))
    np.testing.assert_array_equal(table.ids, ref["input_ids"])
    assert table.lengths[5] == 32

    items = np.array([5, 0, 3, 3, 17])
    ids, mask = table.batch(items)
    width = int(ref["attention_mask"][items].sum(1).max())
    np.testing.assert_array_equal(ids.numpy(), ref["input_ids"][items, :width])
    np.testing.assert_array_equal(mask.numpy(), ref["attention_mask"][items, :width])


def test_dataset_batch_matches_memmap(random_corpus, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    ds = PairDataset(random_corpus, split="train", tokenizer=tok, max_length=24, label_columns=["edema"])
    items = np.array([10, 2, 3, 4, 40, 2, 0])  # unsorted, a consecutive run, a repeat
    batch = ds.get_batch(items)
    from radpair.data.tensors import images_to_tensor

    expected = images_to_tensor(np.asarray(random_corpus.images[ds.image_rows[items]]))
    assert batch["images"].equal(expected)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].dtype.is_floating_point is False
    assert batch["labels"].shape == (len(items), 1)


@pytest.mark.parametrize("rows", [[0], [5, 6, 7, 8], [9, 1, 1, 30, 31, 2], []])
def test_read_images_is_the_memmap(random_corpus, rows):
    rows = np.array(rows, dtype=np.int64)
    got = random_corpus.read_images(rows)
    np.testing.assert_array_equal(got, np.asarray(random_corpus.images[rows]))


def test_read_images_names_the_file_for_bad_rows(random_corpus):
    with pytest.raises(DataError, match="images.npy"):
        random_corpus.read_images(np.array([len(random_corpus.images)]))


def test_read_images_does_not_grow_the_resident_set(tmp_path):
    """Reading every image once must not leave the file's pages in this process's RSS."""
    from radpair.data.corpus import Corpus, CorpusWriter

    import pandas as pd

    n, size = 2048, 64  # 8 MiB of images
    writer = CorpusWriter(tmp_path / "c", n, size, size)
    writer.images[:] = 7
    index = pd.DataFrame({"image_index": np.arange(n), "image_id": [f"i{i}" for i in range(n)],
                          "patient_id": "p", "study_id": "s", "view": "PA", "split": "train", "report": "x"})
    writer.finalize(index, {"source": "test"})
    corpus = Corpus.open(tmp_path / "c")

    def rss_file_kib() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        pytest.skip("no RssFile in /proc/self/status")

    before = rss_file_kib()
    buf = np.empty((64, size, size), dtype=np.uint8)
    for start in range(0, n, 64):
        corpus.read_images(np.arange(start, start + 64), out=buf)
    assert buf.min() == 7
    assert rss_file_kib() - before < 2048  # the 8 MiB file did not become resident


def test_read_images_survives_copies_and_checks_its_buffer(random_corpus):
    import copy
    import pickle

    expected = np.asarray(random_corpus.images[[4, 1]])
    twin = copy.copy(random_corpus)
    np.testing.assert_array_equal(twin.read_images(np.array([4, 1])), expected)
    del twin  # must not close the original's descriptor
    np.testing.assert_array_equal(random_corpus.read_images(np.array([4, 1])), expected)
    clone = pickle.loads(pickle.dumps(random_corpus))
    np.testing.assert_array_equal(clone.read_images(np.array([4, 1])), expected)

    h, w = random_corpus.image_size
    with pytest.raises(DataError, match="uint8"):
        random_corpus.read_images(np.array([0, 1]), out=np.empty((2, h, w), dtype=np.float32))
    with pytest.raises(DataError, match="uint8"):
        random_corpus.read_images(np.array([0, 1]), out=np.empty((1, h, w), dtype=np.uint8))


def test_read_images_of_a_sliced_corpus_reads_the_slice(random_corpus):
    from dataclasses import replace

    tail = replace(random_corpus, images=random_corpus.images[8:])
    np.testing.assert_array_equal(tail.read_images(np.array([0, 1])), np.asarray(random_corpus.images[[8, 9]]))


def test_token_ids_beyond_uint16_widen_the_table():
    class Sparse:  # a vocabulary with gaps: few entries, large ids
        pad_token_id = 0

        def __len__(self):
            return 10

        def __call__(self, texts, **kw):
            return {"input_ids": [[1, 70000, 2][: len(t)] for t in texts]}

    table = tokenize_texts(["abc", "a"], Sparse(), max_length=4)
    assert table.ids.dtype == np.int32
    assert table.ids[0, :3].tolist() == [1, 70000, 2] and table.lengths.tolist() == [3, 1]
