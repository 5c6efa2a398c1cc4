"""Every new loss: two gloo processes reproduce one process on the concatenated batch.

Each process computes its loss on its own rows against columns gathered from every
process (autograd-aware gather: the backward sums each process's contribution into the
owner's gradient). DDP averages gradients, so the single-process global loss L must equal
the mean of the per-process losses, and dL/dx for a row of rank r must equal
(gradient rank r sees) / world size; shared parameters (the match classifier) get the
mean of the per-process gradients. One spawn runs every loss to keep the test short.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
import torch

WORLD = 2
N_LOCAL = 4
ROW_KEYS = ("image", "text", "findings", "impression", "image_logits", "text_logits")


def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    b = WORLD * N_LOCAL
    data = {k: torch.randn(b, 3, generator=g) for k in ("image", "text", "findings", "impression")}
    data["image_logits"] = torch.randn(b, 4, generator=g)
    data["text_logits"] = torch.randn(b, 4, generator=g)
    data["labels"] = torch.tensor([0, -1, 3, 1, -1, 2, 2, -1])  # mixed labelled/unlabelled on both ranks
    data["study"] = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4])  # study 2 spans both ranks
    data["report"] = torch.tensor([10, 11, 10, 12, 13, 11, 14, 15])
    data["W"] = torch.randn(2, 3, generator=g)
    data["b"] = torch.randn(2, generator=g)
    return data


def _losses(d: dict, rank: int, world: int) -> dict:
    """Every new loss on this process's slice; returns name -> (loss, leaves)."""
    from radpair.objectives import (
        RowCodes,
        direct_similarity_loss,
        false_negative_mask,
        impostor_false_negatives,
        impostor_permutation,
        labelled_cross_entropy,
        masked_info_nce,
        matching_loss,
        matching_pairs,
        ranking_loss,
        section_study_loss,
    )

    n = d["image"].shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    impostor = torch.as_tensor(impostor_permutation(5, 1, world * n))[sl]
    pairs = matching_pairs(d["report"].numpy(), seed=5, epoch=1)  # global codes: the same on every rank
    codes = RowCodes(study=d["study"][sl], report=d["report"][sl])
    mask = false_negative_mask(codes, ["study", "report"])
    builders = {}
    for sim in ("dot", "cosine", "l2"):
        builders[f"ranking_{sim}"] = lambda x, s=sim: ranking_loss(x["image"], x["text"], impostor, d["labels"][sl], similarity=s).loss
        builders[f"direct_{sim}"] = lambda x, s=sim: direct_similarity_loss(x["image"], x["text"], s).loss
    builders["ranking_false_negative"] = lambda x: ranking_loss(
        x["image"], x["text"], impostor, d["labels"][sl], false_negative=impostor_false_negatives(mask, impostor),
        false_negative_weight=0.25).loss
    for norm in ("batch", "labelled"):
        builders[f"classifier_{norm}"] = lambda x, m=norm: labelled_cross_entropy(
            x["image_logits"], x["text_logits"], d["labels"][sl], normalize=m).loss
    builders["sections"] = lambda x: section_study_loss(x["image"], x["findings"], x["impression"], 0.1, 0.6, 0.3, 0.8).loss
    builders["matching"] = lambda x: matching_loss(x["image"], x["text"], pairs, lambda f: f @ x["W"].t() + x["b"]).loss
    for mode in ("mask", "soften"):
        builders[f"info_nce_{mode}"] = lambda x, m=mode: masked_info_nce(x["image"], x["text"], 0.2, 0.75, mask, mode=m).loss
    out = {}
    for name, build in builders.items():
        leaves = {k: d[k][sl].clone().requires_grad_() for k in ROW_KEYS}
        leaves.update({k: d[k].clone().requires_grad_() for k in ("W", "b")})
        loss = build(leaves)
        loss.backward()
        out[name] = {"loss": loss.item(), **{k: (v.grad.clone() if v.grad is not None else torch.zeros_like(v))
                                             for k, v in leaves.items()}}
    return out


def _worker(rank: int, port: int, result_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.save(_losses(_inputs(), rank, WORLD), os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_new_loss_matches_one_process_in_loss_and_gradients(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn", join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail("gloo workers did not finish within 120 s")

    single = _losses(_inputs(), 0, 1)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert set(ranks[0]) == set(single)
    for name, want in single.items():
        got_loss = np.mean([r[name]["loss"] for r in ranks])
        assert got_loss == pytest.approx(want["loss"], rel=1e-5, abs=1e-7), name
        for key in ROW_KEYS:
            got = torch.cat([r[name][key] / WORLD for r in ranks])
            assert torch.allclose(got, want[key], rtol=1e-5, atol=1e-6), (name, key, got, want[key])
        for key in ("W", "b"):
            got = sum(r[name][key] for r in ranks) / WORLD
            assert torch.allclose(got, want[key], rtol=1e-5, atol=1e-6), (name, key)
        assert any(want[k].abs().sum() > 0 for k in ROW_KEYS), f"{name}: the example has no gradient to compare"
