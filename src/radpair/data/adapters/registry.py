"""The dataset registry: ``--dataset NAME`` -> adapter, typos answered with the closest name.

Adapter modules register themselves on import; :func:`load_all` imports them all (they
depend only on pandas, heavy readers are imported lazily inside them).
"""

from __future__ import annotations

import importlib

from radpair.registry import Registry

ADAPTERS: Registry = Registry("dataset")

ADAPTER_MODULES = [
    "mimic_cxr_jpg",
    "mimic_cxr_dicom",
    "mimic_edema",
    "chexpert",
    "iu_xray",
    "chestxray14",
    "folder",
    "covid",
    "generic_csv",
]


def load_all() -> Registry:
    for name in ADAPTER_MODULES:
        importlib.import_module(f"radpair.data.adapters.{name}")
    return ADAPTERS
