"""Shared fixtures. Tests build their own small data; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

# Two test workers share two cores; one thread each keeps them from fighting.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_random_corpus(root: Path, n: int = 96, size: int = 64, seed: int = 0):
    """A corpus of noise images whose reports state one binary label (for plumbing tests)."""
    from radpair.data.corpus import CorpusWriter

    rng = np.random.default_rng(seed)
    writer = CorpusWriter(root, n, size, size)
    writer.images[:] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    label = rng.integers(0, 2, n)
    split = np.where(np.arange(n) % 4 == 0, "test", "train")
    index = pd.DataFrame(
        {
            "image_index": np.arange(n),
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"pat{i}" for i in range(n)],
            "study_id": [f"st{i}" for i in range(n)],
            "view": "PA",
            "split": split,
            "report": [
                "FINDINGS: " + ("Mild pulmonary edema." if y else "No pulmonary edema.") + " Heart size is normal."
                for y in label
            ],
        }
    )
    truth = pd.DataFrame({"image_id": index["image_id"], "edema": label})
    return writer.finalize(index, {"source": "random-test"}, ground_truth=truth)


@pytest.fixture(scope="session")
def random_corpus(tmp_path_factory):
    return make_random_corpus(tmp_path_factory.mktemp("corpus") / "c")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, random_corpus):
    from radpair.text import train_wordpiece_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_wordpiece_tokenizer(random_corpus.index["report"].tolist(), out, vocab_size=120, min_frequency=1)
    return out
