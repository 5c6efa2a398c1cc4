"""Checkpoints of the whole training state, written atomically, loaded without pickle.

A checkpoint holds the model, optimiser, scheduler, gradient scaler, LookAhead slow
weights, every RNG state and the position in the data order, so a resumed run continues
exactly where the last one stopped.

Writing: ``step-N.pt.tmp`` is written (hashing the bytes on the way), fsync'ed and
renamed to ``step-N.pt``; then a small ``step-N.json`` records its size and SHA-256, and
``latest`` names the newest file. A crash at any instant leaves either the old set or
the new set of complete files, never a half-written file under a real name.

Reading: ``torch.load(weights_only=True)``, so no arbitrary object is ever unpickled.
A checkpoint whose size or hash disagrees with its record, or that fails to load
(truncated, corrupt), is skipped with a warning and the previous one is used.

Resuming with another config: :func:`config_changes` lists, key by dotted key, how the
config stored in a checkpoint differs from the current one (the trainer warns about each
and records them in ``run_info.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import dataclasses
from collections.abc import Mapping

import torch

from radpair.config import to_dict
from radpair.data.corpus import atomic_write_text

_NAME = re.compile(r"^step-(\d+)\.pt$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _HashingWriter:
    """A binary file that hashes what passes through, so saving needs no second read."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += view.nbytes
        return self.fh.write(view)

    def flush(self) -> None:
        self.fh.flush()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
    return sha.hexdigest()


class CheckpointCorrupt(RuntimeError):
    """A checkpoint file disagrees with its size/hash record or cannot be parsed."""


class CheckpointManager:
    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = max(1, keep)

    def path_for(self, step: int) -> Path:
        return self.directory / f"step-{step:08d}.pt"

    @staticmethod
    def record_for(path: Path) -> Path:
        return path.with_suffix(".json")

    def save(self, state: dict[str, Any], step: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path_for(step)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as fh:
            writer = _HashingWriter(fh)
            torch.save(state, writer)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        record = {"file": final.name, "step": step, "bytes": writer.size, "sha256": writer.sha.hexdigest()}
        atomic_write_text(self.record_for(final), json.dumps(record) + "\n")
        atomic_write_text(self.directory / "latest", final.name + "\n")
        _fsync_dir(self.directory)
        self._prune()
        return final

    def checkpoints(self) -> list[Path]:
        """Existing checkpoints, newest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def latest_pointer(self) -> Path | None:
        pointer = self.directory / "latest"
        try:
            name = pointer.read_text().strip()
        except OSError:
            return None
        return self.directory / name if _NAME.match(name) else None

    def _prune(self) -> None:
        for old in self.checkpoints()[self.keep :]:
            old.unlink(missing_ok=True)
            self.record_for(old).unlink(missing_ok=True)

    def verify(self, path: Path) -> None:
        """Compare the file with the size and hash recorded when it was written."""
        record_path = self.record_for(path)
        if not record_path.is_file():
            return  # written by an older version: rely on the loader's own checks
        record = json.loads(record_path.read_text())
        size = path.stat().st_size
        if size != record["bytes"]:
            raise CheckpointCorrupt(f"{size} bytes on disk, {record['bytes']} written (truncated?)")
        if file_sha256(path) != record["sha256"]:
            raise CheckpointCorrupt("SHA-256 differs from the one recorded at write time")

    def load(self, path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        path = Path(path)
        self.verify(path)
        return torch.load(path, map_location=map_location, weights_only=True)

    def candidates(self) -> list[Path]:
        """``latest`` first (when it names an existing file), then the others newest first."""
        found = self.checkpoints()
        pointer = self.latest_pointer()
        if pointer is not None and pointer in found:
            found.remove(pointer)
            found.insert(0, pointer)
        return found

    def load_latest_with_path(self, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any] | None, Path | None]:
        """The newest checkpoint that verifies and loads, and its path; corrupt ones are skipped."""
        for path in self.candidates():
            try:
                return self.load(path, map_location), path
            except Exception as exc:  # truncated zip, hash mismatch, bad pickle opcode, ...
                warnings.warn(
                    f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); trying the previous one",
                    stacklevel=2,
                )
        return None, None

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint that loads; corrupt ones are reported and skipped."""
        return self.load_latest_with_path(map_location)[0]


RESUME_IGNORED_KEYS = frozenset(
    {
        "train.out_dir",  # the same run folder may be reached by another path (a moved or remounted disk)
        "train.progress",
        "train.log_every",
        "train.threads",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.dist_timeout_s",
        "data.prefetch",
    }
)
"""Keys whose change on resume cannot change what is trained (display, logging, checkpoint
cadence, threads, timeouts, prefetching): :func:`config_changes` leaves them out."""

_MISSING = object()


def _leaves(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every field of a config dataclass tree; dict-valued fields
    (e.g. ``optim.lr_scale``) are one value, not a subtree."""
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += _leaves(value, key + ".")
        else:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = _MISSING
            out.append((key, (value, default)))
    return out


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _plain(value: Any) -> Any:
    """The JSON form of a config value (tuples become lists, paths strings), as stored."""
    return json.loads(json.dumps(to_dict(value)))


def config_changes(saved: Mapping[str, Any] | str | None, current: Any,
                   ignore: frozenset[str] = RESUME_IGNORED_KEYS) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (checkpoint value, current value)}`` for every key of the config
    dataclass ``current`` whose value differs from the one in ``saved`` (the checkpoint's
    ``config``: a JSON string or a nested mapping), except the keys in ``ignore``.

    A key absent from ``saved`` (added to the config after the checkpoint was written) is a
    change only when its current value differs from the field's default; keys of ``saved``
    that no longer exist are not reported (they can no longer be set).
    """
    if saved is None:
        return {}
    if isinstance(saved, str):
        saved = json.loads(saved)
    changes: dict[str, tuple[Any, Any]] = {}
    for key, (value, default) in _leaves(current):
        if key in ignore:
            continue
        new = _plain(value)
        old = _lookup(saved, key)
        if old is _MISSING:
            if default is _MISSING or _plain(default) != new:
                changes[key] = (None, new)
            continue
        if old != new:
            changes[key] = (old, new)
    return changes
