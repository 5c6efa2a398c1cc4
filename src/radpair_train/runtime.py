"""Process-level setup: device choice, threads, run metadata.

``DistInfo`` and ``init_distributed`` live in :mod:`radpair_train.distributed` and are
re-exported here for code written against the first version of the engine.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

from radpair.errors import ConfigError
from radpair_train.distributed import DistInfo, init_distributed

__all__ = ["DistInfo", "init_distributed", "resolve_device", "environment_info", "git_commit", "cpu_model"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible; use train.device=cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if not out.stdout.strip():
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except Exception:
        return None


# variables that change CPU speed a lot (OMP_WAIT_POLICY: up to 5x on a shared machine)
_THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), for benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(dist: DistInfo | None = None, device: torch.device | None = None) -> dict:
    """What is needed to interpret or repeat a run: versions, commit, machine, launch layout."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("radpair", "torch", "monai", "transformers", "tokenizers", "numpy", "scikit-learn", "safetensors"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    dist = dist or DistInfo()
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threading_env": {k: os.environ.get(k) for k in _THREAD_VARS},
        "world_size": dist.world_size,
        "dist_backend": dist.backend,
        "packages": versions,
        "git_commit": git_commit(),
    }
