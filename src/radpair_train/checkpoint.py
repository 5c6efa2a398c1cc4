"""Checkpoints of the whole training state, written atomically, loaded without pickle.

A checkpoint holds the model, optimiser, scheduler, every RNG state the run uses and the
position in the data order, so a resumed run continues exactly where the last one
stopped. Files are written to a temporary name, fsync'ed and renamed, so a crash never
leaves a half-written file under a real name; a ``latest`` file names the newest one.
Loading uses ``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.
A checkpoint that fails to load (truncated, corrupt) is skipped with a warning and the
previous one is used.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

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


class CheckpointManager:
    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = max(1, keep)

    def path_for(self, step: int) -> Path:
        return self.directory / f"step-{step:08d}.pt"

    def save(self, state: dict[str, Any], step: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path_for(step)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        latest_tmp = self.directory / "latest.tmp"
        latest_tmp.write_text(final.name + "\n")
        os.replace(latest_tmp, self.directory / "latest")
        _fsync_dir(self.directory)
        self._prune()
        return final

    def checkpoints(self) -> list[Path]:
        """Existing checkpoints, newest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def _prune(self) -> None:
        for old in self.checkpoints()[self.keep :]:
            old.unlink(missing_ok=True)

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint that loads; corrupt ones are reported and skipped."""
        for path in self.checkpoints():
            try:
                return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as exc:  # truncated zip, bad pickle opcode, ...
                warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); trying the previous one")
        return None
