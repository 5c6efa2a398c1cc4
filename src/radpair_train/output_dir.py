"""Fail before any work when an output folder cannot be written (torch-free, so light
commands such as ``radpair evaluate generation`` can use it without importing torch)."""

from __future__ import annotations

import os
from pathlib import Path

from radpair.errors import ConfigError


def check_output_dir(path: str | Path) -> Path:
    """Create ``path`` or fail now, before any work, if it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # one probe per process: every process of a distributed launch checks the same folder
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"output folder {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path
