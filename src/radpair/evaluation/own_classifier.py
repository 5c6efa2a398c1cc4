"""Score a method's own image classifier on a task's test split (the ``joint`` protocol).

Some methods train a classifier with the representation instead of leaving transfer to a
separate head: Chauhan et al.'s image classifier (Eq. 3), later TieNet's. Their papers
report that classifier, reading the image alone. This loads a finished run folder, calls
the method's ``predict(images)`` (class probabilities from the image stream) on every test
image with a usable label, and scores it exactly like a transfer cell: the task's metrics
(for ordinal tasks the dichotomised AUCs and macro-F1) with patient-bootstrap CIs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from radpair.errors import ConfigError, DataError

def load_trained_method(run_dir: str | Path, device: str = "cpu", tokenizer: str | Path | None = None):
    """The method of a finished run folder with its final weights (newest checkpoint), in eval mode."""
    from radpair.evaluation.joint import _tokenizer_path, checkpoint_steps, run_parts
    from radpair.methods import BuildContext, build_method, method_needs
    from radpair.text import load_tokenizer

    root, config, method_cfg, image_cfg, text_cfg = run_parts(run_dir)
    tok = load_tokenizer(_tokenizer_path(root, config, tokenizer)) if method_needs(method_cfg).needs_text else None
    with torch.random.fork_rng(devices=[]):  # building draws an initialisation we then overwrite
        model = build_method(method_cfg, BuildContext(image_cfg, text_cfg, tok))
    steps = checkpoint_steps(root)
    if not steps:
        raise DataError(f"{root}: no checkpoints/step-*.pt; is the run finished?")
    path = root / "checkpoints" / f"step-{steps[-1]:08d}.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    except Exception as exc:  # noqa: BLE001 - truncated zip, missing key: name the file
        raise DataError(f"{path}: not a readable radpair checkpoint ({type(exc).__name__}: {exc})") from None
    model.load_state_dict(state)
    return model.to(device).eval(), config


def evaluate_own_classifier(run_dir: str | Path, corpus, task: str, *, test_labels: str | None = None,
                            n_bootstrap: int = 1000, seed: int = 0, device: str = "cpu",
                            batch_size: int = 256, confidence: float = 0.95) -> dict[str, Any]:
    """``{"values", "ci", "n", ...}`` of the run's own image classifier on ``task``'s test split."""
    from radpair.data.corpus import Corpus
    from radpair.data.tensors import images_to_tensor
    from radpair.evaluation.paired import BootstrapDraws
    from radpair.evaluation.taskmetrics import score_task
    from radpair.tasks import load_task
    from radpair.transfer.sweep import load_task_data

    model, _ = load_trained_method(run_dir, device)
    if not hasattr(model, "predict"):
        raise ConfigError(f"{run_dir}: method {type(model).__name__} has no classifier of its own (predict); "
                          "transfer its encoder with the linear, frozen-head or finetune protocol instead")
    if not isinstance(corpus, Corpus):
        corpus = Corpus.open(corpus)
    spec = load_task(task).with_sources(None, test_labels)
    data = load_task_data(corpus, spec, spec.views)
    rows = data.image_index[data.test_rows]
    probs = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            images = images_to_tensor(corpus.read_images(rows[start:start + batch_size])).to(device)
            probs.append(model.predict(images).float().cpu().numpy())
    p = np.concatenate(probs).astype(np.float64)
    names = data.test.class_names
    if p.shape[1] != len(names):
        raise DataError(f"{run_dir}: the classifier has {p.shape[1]} outputs but task {task!r} has {len(names)} "
                        f"classes ({names})")
    draws = BootstrapDraws.draw(data.patients[data.test_rows], n_bootstrap, seed) if n_bootstrap else None
    metrics = score_task(data.test.kind, data.test.y, data.test.mask, p, names, draws=draws, confidence=confidence)
    out = metrics.to_dict()
    out["n_test"] = int(len(rows))
    return out
