"""Dataset adapters: each public dataset's layout -> one common index.

``build_index("mimic_cxr_jpg", root, AdapterOptions(...), SplitSpec(...))`` returns a
:class:`DatasetIndex` whose table has ``RECORD_COLUMNS`` (path, image_id, patient_id,
study_id, view, split, report) plus label columns (1 / 0 / -1 / NaN), frontal-filtered,
with patient-level splits checked. ``ADAPTERS.names()`` lists the datasets.
"""

from radpair.data.adapters.base import (
    RECORD_COLUMNS,
    AdapterOptions,
    AdapterResult,
    DatasetAdapter,
    ViewFilter,
)
from radpair.data.adapters.build import (
    DatasetIndex,
    build_index,
    merge_duplicate_images,
)
from radpair.data.adapters.labels import (
    CHEXPERT_LABELS,
    UncertaintyPolicy,
    apply_uncertainty,
)
from radpair.data.adapters.registry import ADAPTERS, load_all
from radpair.data.adapters.splits import (
    SplitInfo,
    SplitSpec,
    assign_splits,
    check_patient_splits,
    hashed_split,
    split_manifest,
)

load_all()

__all__ = [
    "ADAPTERS",
    "CHEXPERT_LABELS",
    "RECORD_COLUMNS",
    "AdapterOptions",
    "AdapterResult",
    "DatasetAdapter",
    "DatasetIndex",
    "SplitInfo",
    "SplitSpec",
    "UncertaintyPolicy",
    "ViewFilter",
    "apply_uncertainty",
    "assign_splits",
    "build_index",
    "check_patient_splits",
    "hashed_split",
    "merge_duplicate_images",
    "split_manifest",
]
