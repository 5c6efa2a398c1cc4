"""Decode a list of files into one ``.npy`` stack, recording instead of raising failures.

This is the unit of work of the preprocessing cache's worker processes. It lives here,
away from pandas and the adapters, so a freshly spawned worker imports only numpy and
Pillow/pydicom (~0.2 s instead of ~0.8 s per worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radpair.data.io.geometry import ResizeSpec
from radpair.data.io.reader import prepare_radiograph
from radpair.data.io.spec import NormalisationSpec, OutputDType, RadiographError


@dataclass(frozen=True)
class DecodeJob:
    """Picklable description of one stack: decode ``paths`` into ``out`` (N, size, size)."""

    paths: tuple[str, ...]
    out: str
    resize: ResizeSpec
    normalisation: NormalisationSpec


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def decode_to_npy(job: DecodeJob) -> list[list]:
    """Write the stack by atomic rename and return ``[[position, reason], ...]`` of failures.

    Failed positions stay zero. The temporary name carries the pid, so a stale worker of a
    killed run never writes into the file of a new one.
    """
    out = Path(job.out)
    size = job.resize.size
    dtype = np.uint8 if job.normalisation.dtype is OutputDType.UINT8 else np.uint16
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(job.paths), size, size))
    failures: list[list] = []
    for j, path in enumerate(job.paths):
        try:
            images[j] = prepare_radiograph(path, job.resize, job.normalisation)
        except RadiographError as exc:
            failures.append([j, exc.reason])
        except MemoryError:
            raise
        except Exception as exc:  # a decoder bug on one odd file must not sink a long run
            failures.append([j, f"unexpected {type(exc).__name__}: {exc}"])
    images.flush()
    del images
    fsync_file(tmp)
    os.replace(tmp, out)
    return failures
