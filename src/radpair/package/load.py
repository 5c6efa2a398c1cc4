"""Open a model package: verify every file, then rebuild the model from JSON and safetensors.

Nothing here unpickles: the architecture comes from ``config.json``, the weights from
``model.safetensors``, and the hashes are checked before any of them is parsed, so a
tampered or half-copied package fails before it can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radpair.errors import DataError
from radpair.package import files as F
from radpair.package.model import PackagedModel, build_model, load_weights
from radpair.package.ood import FeatureStats
from radpair.package.preprocessing import Preprocessing


@dataclass
class Package:
    root: Path
    config: dict[str, Any]
    preprocessing: Preprocessing
    labels: dict[str, Any]
    card: dict[str, Any]
    model: PackagedModel
    feature_stats: FeatureStats | None

    @property
    def class_names(self) -> list[str]:
        return list(self.labels["class_names"])

    @property
    def categorical(self) -> bool:
        return bool(self.labels["categorical"])

    @property
    def thresholds(self) -> np.ndarray | None:
        th = self.labels.get("thresholds")
        return None if th is None else np.asarray(th["values"], dtype=np.float64)


def load_package(path: str | Path, device: str = "cpu") -> Package:
    """The package in folder ``path``, model in eval mode on ``device``; raises
    :class:`~radpair.errors.DataError` naming the file that is missing, altered or invalid."""
    import torch

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such model package folder (make one with `radpair export`)")
    card = F.read_json(root / F.CARD)
    if card.get("format") != F.FORMAT:
        raise DataError(f"{root / F.CARD}: format is {card.get('format')!r}, expected {F.FORMAT!r}")
    if int(card.get("version", 0)) > F.VERSION:
        raise DataError(f"{root / F.CARD}: package version {card.get('version')} is newer than this radpair reads")
    listed = F.verify_files(root, card)
    config = F.read_json(root / F.CONFIG)
    prep = Preprocessing.from_dict(F.read_json(root / F.PREPROCESSING), str(root / F.PREPROCESSING))
    labels = F.read_json(root / F.LABELS)
    for key in ("class_names", "categorical"):
        if key not in labels:
            raise DataError(f"{root / F.LABELS}: no {key!r}")
    model = build_model(config, root)
    load_weights(model, root / F.WEIGHTS)
    if model.n_outputs != len(labels["class_names"]):
        raise DataError(f"{root / F.LABELS}: {len(labels['class_names'])} class names for a model with "
                        f"{model.n_outputs} outputs")
    stats = FeatureStats.load(root / F.FEATURES) if F.FEATURES in listed else None
    model.to(torch.device(device)).eval()
    return Package(root, config, prep, labels, card, model, stats)
