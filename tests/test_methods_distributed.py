"""Two gloo processes reproduce one process for every joint method, end to end.

The objectives have their own gloo tests (tests/test_objectives_gloo.py); this runs the
methods through the loop, so extra rows (impostors, false pairs), phases, task labels and
BatchNorm over the global batch (``train.sync_batchnorm``) are all in the comparison.
Settings as in tests/test_engine_distributed.py: SGD, no dropout, no augmentation.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from safetensors.torch import load_file

from radpair_train.testing import run_and_record

from test_engine_distributed import _relative_errors
from test_methods import METHOD_RUNS, _overrides


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from radpair.data.synth import generate_corpus
    from radpair.text import train_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("methods_ddp")
    corpus = generate_corpus(root / "corpus", n_images=120, size=64, seed=6, workers=1)
    train_wordpiece_tokenizer(corpus.index["report"].astype(str).tolist(), root / "tok", vocab_size=300, min_frequency=1)
    return root / "corpus", root / "tok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = {name: (name, {}) for name in METHOD_RUNS}
CASES["chauhan_joint_phase"] = ("chauhan_ranking", {"method.ranking_epochs": 0})  # Eq. (3) on labelled pairs
CASES["chauhan_batch_impostors"] = ("chauhan_ranking", {"method.impostors": "batch", "method.avoid_same_study": True})


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_gloo_processes_match_one_process(synth, tmp_path, case):
    import torch.multiprocessing as mp

    from radpair_train.testing import distributed_worker

    name, more = CASES[case]
    extra = {"method.name": name, **METHOD_RUNS[name], **more, "train.max_steps": 2, "data.batch_size": 16,
             "optim.grad_clip": None, "train.sync_batchnorm": True, "train.checkpoint_every": 100,
             "data.prefetch": False, "data.augment.enabled": False, "optim.name": "sgd", "optim.lr": 0.01}
    if name == "chauhan_ranking":
        extra["method.labelled_fraction"] = None  # labelled and unlabelled rows in every batch
    single = run_and_record(_overrides(synth, tmp_path / "one", **extra), tmp_path / "one" / "rec")
    results = tmp_path / "two"
    mp.set_forkserver_preload(["radpair_train.loop"])
    mp.start_processes(distributed_worker, args=(2, _free_port(), _overrides(synth, results / "run", **extra),
                                                 str(results)), nprocs=2, start_method="forkserver", join=True)
    for rank in (0, 1):
        grads = load_file(str(results / f"rank{rank}.grads.safetensors"))
        assert grads.keys() == single["grads"].keys()
        first = {k: v for k, v in single["grads"].items() if k.startswith("1/")}
        errors = _relative_errors(grads, first)
        report = f"{name} rank {rank}: worst {max(errors.items(), key=lambda kv: kv[1])}"
        assert float(np.median(list(errors.values()))) < 3e-5, report
        assert errors["<all>"] < 1e-2 and max(errors.values()) < 5e-2, report
        losses = json.loads((results / f"rank{rank}.losses.json").read_text())
        assert losses[0] == pytest.approx(single["losses"][0], rel=1e-5), (rank, losses, single["losses"])
