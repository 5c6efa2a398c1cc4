"""Failure handling: a NaN stops the run with a useful message; a corrupt checkpoint is skipped."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from radpair.config import load_config
from radpair_train.checkpoint import CheckpointManager
from radpair_train.config import PretrainConfig
from radpair_train.loop import Trainer, TrainingDiverged
from radpair_train.testing import corpus_and_tokenizer, tiny_overrides


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus_and_tokenizer(tmp_path_factory.mktemp("failures"), n=64, size=32, seed=3)


def _cfg(data, out, **extra):
    return load_config(PretrainConfig, None, tiny_overrides(*data, out, **extra))


def test_nan_in_a_batch_stops_with_step_components_and_ids(data, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(_cfg(data, out, **{"train.max_steps": 10, "train.checkpoint_every": 2}))
    bad_step = 5  # 1-based: the fifth step sees the corrupted image
    finish = trainer._finish  # runs in the prefetch thread, one step ahead

    def corrupt(step, micro):
        micro = finish(step, micro)
        if step == bad_step - 1:
            micro[0]["images"][3, 0, 5, 5] = float("nan")  # one pixel of one image
        return micro

    trainer._finish = corrupt
    expected_rows = trainer.plan.rows(bad_step - 1)[0]
    expected_ids = trainer.dataset.image_rows[expected_rows].tolist()

    with pytest.raises(TrainingDiverged) as exc:
        trainer.fit()
    msg = str(exc.value)
    assert f"step {bad_step} " in msg and "loss=nan" in msg
    assert "image_to_text=" in msg and "text_to_image=" in msg
    assert str(expected_ids) in msg and f"img{expected_ids[0]}" in msg
    assert "step-00000004.pt" in msg

    # the last good checkpoint is the newest one, and it loads
    manager = CheckpointManager(out / "checkpoints")
    assert [p.name for p in manager.checkpoints()][0] == "step-00000004.pt"
    state = manager.load_latest()
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    info = json.loads((out / "diverged.json").read_text())
    assert info["step"] == bad_step and info["batch_image_index"] == expected_ids
    # the log stops before the bad step
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(data, tmp_path):
    out = tmp_path / "run"
    over = {"train.max_steps": 6, "train.checkpoint_every": 2, "train.keep_checkpoints": 3}
    Trainer(_cfg(data, out, **over)).fit()
    final = load_file(str(out / "image_encoder.safetensors"))
    manager = CheckpointManager(out / "checkpoints")
    newest = manager.checkpoints()[0]
    assert newest.name == "step-00000006.pt"
    blob = newest.read_bytes()
    newest.write_bytes(blob[: len(blob) * 2 // 3])  # a disk-full or killed copy

    with pytest.warns(UserWarning, match="step-00000006.pt is unreadable"):
        state = manager.load_latest()
    assert state["step"] == 4

    # resuming uses step 4 and recomputes steps 5-6 to the same weights
    (out / "image_encoder.safetensors").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = Trainer(_cfg(data, out, **over)).fit(resume=True)
    assert any("unreadable" in str(w.message) for w in caught)
    assert result.steps == 6
    again = load_file(str(out / "image_encoder.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_checkpoint_with_a_flipped_byte_is_rejected(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save({"step": 1, "w": torch.ones(1000)}, 1)
    manager.save({"step": 2, "w": torch.ones(1000) * 2}, 2)
    path = manager.path_for(2)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, different content: only the hash can tell
    path.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="SHA-256"):
        assert manager.load_latest()["step"] == 1


def test_resume_refuses_a_different_data_order(data, tmp_path):
    from radpair.errors import ConfigError

    out = tmp_path / "run"
    Trainer(_cfg(data, out, **{"train.max_steps": 2})).fit()
    with pytest.raises(ConfigError, match="global_batch"):
        Trainer(_cfg(data, out, **{"train.max_steps": 4, "data.batch_size": 8})).fit(resume=True)
