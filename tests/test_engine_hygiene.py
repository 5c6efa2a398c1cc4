"""What reaches a loss: rows with an empty selected text, and label values a binary loss
cannot take, are handled by stated policies before the first step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radpair.config import load_config
from radpair.errors import ConfigError, DataError
from radpair_train.config import PretrainConfig
from radpair_train.loop import Trainer
from radpair_train.testing import random_reports, tiny_overrides

N = 48


def _corpus(root: Path):
    """N noise images; every 4th report has no FINDINGS (empty under ``findings``), one
    report is whitespace only; the truth holds a binary and an ordinal column."""
    from radpair.data.corpus import CorpusWriter

    rng = np.random.default_rng(5)
    reports = random_reports(N, seed=5)
    for i in range(0, N, 4):
        reports[i] = "IMPRESSION: " + reports[i].split("IMPRESSION: ")[1]
    reports[1] = "   \n "
    writer = CorpusWriter(root, N, 32, 32)
    writer.images[:] = rng.integers(0, 256, (N, 32, 32), dtype=np.uint8)
    index = pd.DataFrame({
        "image_index": np.arange(N), "image_id": [f"img{i}" for i in range(N)],
        "patient_id": [f"pat{i}" for i in range(N)], "study_id": [f"st{i}" for i in range(N)],
        "view": "PA", "split": "train", "report": reports,
    })
    truth = pd.DataFrame({"image_id": index["image_id"], "edema": rng.integers(0, 2, N),
                          "edema_severity": np.arange(N) % 4})
    return writer.finalize(index, {"source": "hygiene-test"}, ground_truth=truth)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from radpair.text import train_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("hygiene")
    corpus = _corpus(root / "corpus")
    train_wordpiece_tokenizer([r for r in corpus.index["report"] if r.strip()], root / "tok", vocab_size=120,
                              min_frequency=1)
    return corpus.root, root / "tok"


def _cfg(data, out, **extra):
    return load_config(PretrainConfig, None, tiny_overrides(*data, out, **{"train.max_steps": 2, **extra}))


EMPTY = [f"img{i}" for i in range(0, N, 4)] + ["img1"]  # 12 without FINDINGS + 1 whitespace-only


def test_empty_texts_are_dropped_counted_and_listed(data, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = Trainer(_cfg(data, out, **{"data.text_sections": "findings"}))
    assert len(trainer.dataset) == N - len(EMPTY)
    assert set(trainer.dataset.dropped["image_id"]) == set(EMPTY)
    assert not trainer.dataset.rows["image_id"].isin(EMPTY).any()
    assert (trainer.dataset.tokens.lengths > 2).all()  # no [CLS][SEP]-only text is left
    printed = capsys.readouterr().out
    assert f"dropped {len(EMPTY)} of {N} rows ({len(EMPTY)} empty text (section policy findings);" in printed
    trainer.fit()

    info = json.loads((out / "run_info.json").read_text())["empty_text"]
    assert info["policy"] == "drop" and info["text_sections"] == "findings"
    assert info["dropped"] == info["empty"] == len(EMPTY) and info["rows"] == N
    assert info["dropped_examples"] == sorted(EMPTY, key=lambda s: int(s[3:]))[:10]
    listed = pd.read_csv(out / "dropped_rows.csv")
    assert list(listed.columns) == ["image_id", "image_index", "reason"]
    assert sorted(listed["image_id"]) == sorted(EMPTY)
    assert listed["reason"].str.contains("empty text").all() and listed["reason"].str.contains("findings").all()


def test_empty_text_error_and_keep(data, tmp_path):
    with pytest.raises(DataError) as exc:
        Trainer(_cfg(data, tmp_path / "e", **{"data.text_sections": "findings", "data.empty_text": "error"}))
    msg = str(exc.value)
    assert str(data[0]) in msg and "'findings'" in msg and f"{len(EMPTY)} of {N}" in msg and "img0" in msg

    trainer = Trainer(_cfg(data, tmp_path / "k", **{"data.text_sections": "findings", "data.empty_text": "keep"}))
    assert len(trainer.dataset) == N and trainer.dataset.dropped.empty
    assert trainer.dataset.n_empty_text == len(EMPTY)
    trainer.fit()
    assert json.loads((tmp_path / "k" / "run_info.json").read_text())["empty_text"]["dropped"] == 0
    assert not (tmp_path / "k" / "dropped_rows.csv").exists()

    # the whole report: only the whitespace-only one is empty
    trainer = Trainer(_cfg(data, tmp_path / "f", **{"data.text_sections": "full"}))
    assert trainer.dataset.dropped["image_id"].tolist() == ["img1"]

    with pytest.raises(ConfigError, match="data.empty_text"):
        _cfg(data, tmp_path / "x", **{"data.empty_text": "skip"})


def test_methods_without_text_drop_nothing(data, tmp_path):
    out = tmp_path / "sup"
    trainer = Trainer(_cfg(data, out, **{"method.name": "supervised", "method.labels": ["edema"],
                                         "data.text_sections": "findings"}))
    assert trainer.dataset.tokens is None and len(trainer.dataset) == N and trainer.dataset.dropped.empty
    trainer.fit()
    assert "empty_text" not in json.loads((out / "run_info.json").read_text())
    assert not (out / "dropped_rows.csv").exists()


def test_ordinal_labels_never_reach_the_binary_loss(data, tmp_path):
    with pytest.raises(DataError) as exc:
        Trainer(_cfg(data, tmp_path / "sev", **{"method.name": "supervised", "method.labels": ["edema_severity"]}))
    msg = str(exc.value)
    assert "label column 'edema_severity' holds values [2.0, 3.0]" in msg
    assert "a binary loss needs 1, 0, -1 or empty" in msg and "multiclass/ordinal" in msg
    assert str(data[0]) in msg and "ground_truth" in msg
    assert not (tmp_path / "sev" / "checkpoints").exists()  # refused before any step


def test_output_folder_check_is_safe_for_concurrent_processes(tmp_path):
    """Every process of a distributed launch checks the same folder at the same time; one
    process's probe file must not be removed under another's feet."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from unittest import mock

    from radpair_train import loop

    # threads stand in for processes: each gets its own "pid"
    with mock.patch.object(loop.os, "getpid", side_effect=threading.get_ident):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: loop.check_output_dir(tmp_path / "shared"), range(64)))
    assert not list((tmp_path / "shared").iterdir())
