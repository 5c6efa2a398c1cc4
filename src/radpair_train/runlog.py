"""What a run tells its user: JSONL metrics, TensorBoard scalars, a progress display.

Only the main process writes. ``metrics.jsonl`` is the machine-readable record (one line
per logged step: ``step``, ``loss``, ``loss_components``, ``lr`` and throughput); on
resume, lines past the checkpoint are dropped and TensorBoard is told to purge the same
steps, so both logs describe the state that was actually continued.

In a terminal the progress display is a rich bar with loss, throughput and ETA; in a
batch job (output not a terminal, e.g. a SLURM log) it prints one plain line per logged
step instead of redrawing a bar into a file.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so the log matches the state."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    tmp.replace(path)


class MetricsLog:
    """Append-only JSONL plus optional TensorBoard; both started at ``start_step``."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool = True) -> None:
        self.path = out_dir / "metrics.jsonl"
        truncate_log(self.path, start_step)
        self.fh = open(self.path, "a")
        self.writer = _tensorboard(out_dir / "tensorboard", start_step) if tensorboard else None

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.writer is not None:
            step = record["step"]
            self.writer.add_scalar("loss/total", record["loss"], step)
            for k, v in record.get("loss_components", {}).items():
                self.writer.add_scalar(f"loss/{k}", v, step)
            for key in ("lr", "grad_norm", "images_per_s", "data_fraction"):
                if record.get(key) is not None:
                    self.writer.add_scalar(key if key == "lr" else f"perf/{key}", record[key], step)

    def close(self) -> None:
        self.fh.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard(path: Path, start_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSONL log only
        return None
    return SummaryWriter(str(path), purge_step=start_step or None)


class _RichProgress:
    def __init__(self, total: int, start: int, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.bar.add_task(label, total=total, completed=start, loss=float("nan"), rate=0.0)
        self.bar.start()

    def update(self, step: int, loss: float, rate: float, logged: bool) -> None:
        self.bar.update(self.task, completed=step, loss=loss if math.isfinite(loss) else float("nan"), rate=rate)

    def close(self) -> None:
        self.bar.stop()


class _PlainProgress:
    """One line per logged step, for logs that are files (no cursor movement)."""

    def __init__(self, total: int, start: int, label: str) -> None:
        self.total, self.label = total, label
        self.t0, self.start = time.perf_counter(), start

    def update(self, step: int, loss: float, rate: float, logged: bool) -> None:
        if not logged:
            return
        elapsed = time.perf_counter() - self.t0
        per_step = elapsed / max(step - self.start, 1)
        eta = per_step * (self.total - step)
        print(
            f"{self.label} step {step}/{self.total} loss {loss:.4f} {rate:.1f} img/s "
            f"elapsed {_hms(elapsed)} ETA {_hms(eta)}",
            flush=True,
        )

    def close(self) -> None:
        pass


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress(enabled: bool, total: int, start: int, label: str):
    if not enabled:
        return None
    if sys.stdout.isatty():
        return _RichProgress(total, start, label)
    return _PlainProgress(total, start, label)
