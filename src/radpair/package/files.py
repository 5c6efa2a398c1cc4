"""The package's files and their SHA-256 manifest.

A package travels by e-mail, USB stick and shared drives; a half-copied weights file or a
hand-edited threshold still loads and predicts, just wrongly. So every file's hash is
written into ``card.json`` at export and checked on every load, and a failure names the
file, not just "corrupt package". This guards against damage and accidental edits; it is
not a signature (``card.json`` itself is not hashed), and loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from radpair.errors import DataError

FORMAT = "radpair-model-package"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESSING = "preprocessing.json"
LABELS = "labels.json"
FEATURES = "feature_stats.safetensors"
ONNX = "model.onnx"
README = "README.md"
CARD = "card.json"
TOKENIZER = "tokenizer"
REQUIRED = (WEIGHTS, CONFIG, PREPROCESSING, LABELS)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, data: Any) -> Path:
    from radpair.data.corpus import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False, default=_default) + "\n")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing from the model package") from None
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def hash_files(root: Path, exclude: tuple[str, ...] = (CARD,)) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` except ``exclude``."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in exclude:
            out[rel] = sha256_file(path)
    return out


def verify_files(root: Path, card: dict[str, Any]) -> dict[str, str]:
    """Check every file ``card.json`` lists: present and unchanged. Raises naming the file."""
    files = card.get("files")
    if not isinstance(files, dict) or not files:
        raise DataError(f"{root / CARD}: lists no file hashes ('files'); not a radpair model package")
    for name in REQUIRED:
        if name not in files:
            raise DataError(f"{root / CARD}: does not list {name}, which every package holds")
    for rel, expected in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DataError(f"{root / CARD}: lists {rel!r}, which is not a path inside the package")
        path = root / rel
        if not path.is_file():
            raise DataError(f"{path}: missing from the model package (card.json lists it with SHA-256 {expected[:12]}…)")
        got = sha256_file(path)
        if got != expected:
            raise DataError(f"{path}: SHA-256 mismatch, the file was altered or is corrupt "
                            f"(card.json expects {expected[:12]}…, the file has {got[:12]}…)")
    tokenizer = root / TOKENIZER
    if tokenizer.is_dir():  # read by the loader: every file in it must be one card.json vouches for
        extra = sorted(p.relative_to(root).as_posix() for p in tokenizer.rglob("*") if p.is_file()
                       and p.relative_to(root).as_posix() not in files)
        if extra:
            raise DataError(f"{root / extra[0]}: not listed in card.json, so it cannot be checked; remove it or "
                            "re-export the package")
    return files


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
