"""Two gloo processes on CPU reproduce one process on the combined batch.

ConVIRT's InfoNCE gathers embeddings from every process (autograd-aware all-gather), so
each process scores its rows against the whole global batch; DDP then averages the
gradients. With BatchNorm each process would normalise with its own half of the batch,
so the comparison runs with ``train.sync_batchnorm=true`` (the CPU GlobalBatchNorm).
Dropout and augmentation are off: each process draws its own masks and augmentation
parameters by design (seeded from run seed, step and rank), so those draws depend on the
number of processes while the rows of every batch do not.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from radpair_train.distributed import first_slurm_host, launch_env
from radpair_train.testing import corpus_and_tokenizer, run_and_record, tiny_overrides


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus_and_tokenizer(tmp_path_factory.mktemp("ddp"), n=64, size=64, seed=2)


def _relative_errors(got: dict, want: dict) -> dict[str, float]:
    """||got - want|| / ||want|| per tensor (tensors whose true gradient is ~0 skipped) and overall.

    Why not elementwise: a ReLU whose input lies within float rounding of 0 (here, 5e-9 in
    one of 16k BatchNorm outputs) is on in one run and off in the other; the gradient of
    that single activation then differs completely and spreads into every earlier layer
    at the 1e-3 level. Everything else agrees to ~1e-6, hence the median test. (A real
    bug — per-process BatchNorm, negatives without gradient — gives errors of 1e-2..1
    in most tensors.)
    """
    errors = {}
    for name, w in want.items():
        if w.norm() > 1e-6:
            errors[name] = ((got[name] - w).norm() / w.norm()).item()
    flat_w = torch.cat([w.flatten() for w in want.values()])
    flat_g = torch.cat([got[k].flatten() for k in want])
    errors["<all>"] = ((flat_g - flat_w).norm() / flat_w.norm()).item()
    return errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GLOO_SETTINGS = {
    "train.max_steps": 2, "data.batch_size": 16, "text_encoder.dropout": 0.0, "optim.grad_clip": None,
    "train.sync_batchnorm": True, "train.checkpoint_every": 100, "data.prefetch": False,
    "data.augment.enabled": False,
    # SGD: Adam divides by sqrt(v), which turns float-rounding differences in near-zero
    # gradients into full-size steps; SGD keeps later steps comparable
    "optim.name": "sgd", "optim.lr": 0.01,
}


def gloo_matches_one_process(overrides, tmp_path, what: str = "", later_steps: bool = True,
                             first_loss_rel: float = 1e-6) -> None:
    """Run ``overrides(out_dir)`` in one process and in two gloo processes; compare the first
    step's gradients and the logged global losses."""
    import torch.multiprocessing as mp

    from radpair_train.testing import distributed_worker

    single = run_and_record(overrides(tmp_path / "one"), tmp_path / "one" / "rec")
    results = tmp_path / "two"
    # forkserver: one server imports the engine once (MONAI's import alone is ~10 s of
    # CPU), then both workers fork from it; it never ran OpenMP, so forking is safe
    mp.set_forkserver_preload(["radpair_train.loop"])
    mp.start_processes(distributed_worker, args=(2, _free_port(), overrides(results / "run"), str(results)),
                       nprocs=2, start_method="forkserver", join=True)
    for rank in (0, 1):
        grads = load_file(str(results / f"rank{rank}.grads.safetensors"))
        assert grads.keys() == single["grads"].keys()
        first = {k: v for k, v in single["grads"].items() if k.startswith("1/")}
        errors = _relative_errors(grads, first)
        report = f"{what} rank {rank}: worst {max(errors.items(), key=lambda kv: kv[1])}"
        assert float(np.median(list(errors.values()))) < 3e-5, report
        assert errors["<all>"] < 1e-2 and max(errors.values()) < 5e-2, report
        # the logged loss is the global-batch loss (averaged over processes); after the
        # first update, ReLU kinks let float rounding grow, so later steps agree less tightly
        losses = json.loads((results / f"rank{rank}.losses.json").read_text())
        assert losses[0] == pytest.approx(single["losses"][0], rel=first_loss_rel), (rank, losses, single["losses"])
        if later_steps:
            assert losses == pytest.approx(single["losses"], rel=2e-4), (rank, losses, single["losses"])
    # only rank 0 writes the run folder
    run = results / "run"
    assert (run / "image_encoder.safetensors").is_file() and (run / "metrics.jsonl").is_file()


def test_two_gloo_processes_match_one_process(data, tmp_path):
    gloo_matches_one_process(lambda out: tiny_overrides(*data, out, **GLOO_SETTINGS), tmp_path, "convirt")


def test_launch_environment_from_torchrun_and_slurm():
    assert launch_env({}) is None
    env = launch_env({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.init_method) == (5, 8, 1, None)
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242",
             "SLURM_JOB_NODELIST": "gpu-[003-004,010]"}
    env = launch_env(slurm)
    assert (env.rank, env.world_size, env.local_rank) == (3, 4, 1)
    assert env.init_method == "tcp://gpu-003:24242"
    assert first_slurm_host("node7,node8") == "node7" and first_slurm_host("a[09-12]") == "a09"
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
