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


def _texts_corpus(root, reports):
    from radpair.data.corpus import CorpusWriter

    import pandas as pd

    n = len(reports)
    writer = CorpusWriter(root, n, 8, 8)
    writer.images[:] = 1
    index = pd.DataFrame({"image_index": np.arange(n), "image_id": [f"i{k}" for k in range(n)], "patient_id": "p",
                          "study_id": "s", "view": "PA", "split": "train", "report": reports})
    truth = pd.DataFrame({"image_id": index["image_id"], "edema": np.arange(n) % 2})
    return writer.finalize(index, {"source": "test"}, ground_truth=truth)


def test_empty_selected_texts_follow_the_policy(tmp_path, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    reports = ["FINDINGS: Mild pulmonary edema.", "IMPRESSION: No edema.", "FINDINGS: No pulmonary edema.",
               "", "  \n ", "FINDINGS: Heart size is normal. IMPRESSION: Normal."]
    corpus = _texts_corpus(tmp_path / "c", reports)

    ds = PairDataset(corpus, tokenizer=tok, text_sections="findings", label_columns=["edema"])  # drop: the default
    assert ds.dropped["image_id"].tolist() == ["i1", "i3", "i4"]
    assert ds.dropped["image_index"].tolist() == [1, 3, 4]
    assert list(ds.dropped.columns) == ["image_id", "image_index", "reason"]
    assert ds.dropped["reason"].eq("empty text (section policy findings)").all()
    assert ds.rows["image_id"].tolist() == ["i0", "i2", "i5"] and ds.image_rows.tolist() == [0, 2, 5]
    assert ds.labels[:, 0].tolist() == [0.0, 0.0, 1.0]  # the labels of the kept rows
    assert ds.rows_before_drop == 6 and ds.n_empty_text == 3 and len(ds) == 3
    ref = tokenize_texts([reports[k] for k in (0, 2, 5)], tok, 128, "findings")
    np.testing.assert_array_equal(ds.tokens.ids, ref.ids)
    assert ds.get_batch(np.array([0, 2]))["ids"].tolist() == [0, 5]

    # whitespace-only counts as empty under the whole report too
    assert PairDataset(corpus, tokenizer=tok, text_sections="full").dropped["image_id"].tolist() == ["i3", "i4"]

    keep = PairDataset(corpus, tokenizer=tok, text_sections="findings", empty_text="keep")
    assert len(keep) == 6 and keep.dropped.empty and keep.n_empty_text == 3
    assert keep.tokens.lengths[[1, 3, 4]].tolist() == [2, 2, 2]  # [CLS][SEP]

    with pytest.raises(DataError, match=r"3 of 6 'train' rows have an empty text under section policy 'findings'"):
        PairDataset(corpus, tokenizer=tok, text_sections="findings", empty_text="error")
    with pytest.raises(DataError, match="empty_text"):
        PairDataset(corpus, tokenizer=tok, empty_text="skip")

    no_text = PairDataset(corpus, text_sections="findings")  # a method without text
    assert len(no_text) == 6 and no_text.dropped.empty and no_text.tokens is None

    only_empty = _texts_corpus(tmp_path / "e", ["IMPRESSION: x.", ""])
    with pytest.raises(DataError, match="every 'train' row has an empty text"):
        PairDataset(only_empty, tokenizer=tok, text_sections="findings")


def test_label_matrix_accepts_binary_and_refuses_other_values():
    import pandas as pd

    from radpair.data.pairs import label_matrix

    frame = pd.DataFrame({"a": [1, 0, -1, None, 1.0], "b": ["1", "", " ", "0", "-1"]})
    values, mask = label_matrix(frame, ["a", "b"])
    assert values.tolist() == [[1, 1], [0, 0], [0, 0], [0, 0], [1, 0]]
    assert mask.tolist() == [[1, 1], [1, 0], [0, 0], [0, 1], [1, 0]]
    values, mask = label_matrix(frame, ["a"], uncertain="ones")
    assert values[:, 0].tolist() == [1, 0, 1, 0, 1] and mask[:, 0].tolist() == [1, 1, 1, 0, 1]

    ordinal = pd.DataFrame({"edema_severity": [0, 1, 2, 3, 2, np.nan]})
    with pytest.raises(DataError) as exc:
        label_matrix(ordinal, ["edema_severity"], source="corpus/x (label source 'ground_truth')")
    assert str(exc.value).startswith(
        "corpus/x (label source 'ground_truth'): label column 'edema_severity' holds values [2.0, 3.0] (3 of 6 rows); "
        "a binary loss needs 1, 0, -1 or empty — use a multiclass/ordinal task"
    )
    with pytest.raises(DataError, match=r"'finding' holds values \[0.5, 'yes'\]"):
        label_matrix(pd.DataFrame({"finding": [1, 0.5, "yes", 0]}), ["finding"])
    with pytest.raises(DataError, match="not found"):
        label_matrix(ordinal, ["edema"])
