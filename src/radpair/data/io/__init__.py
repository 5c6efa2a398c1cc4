"""Radiograph file IO: DICOM, 16-bit PNG and 8-bit JPEG/PNG -> normalised single-channel images.

Typical use::

    from radpair.data.io import NormalisationSpec, ResizeSpec, prepare_radiograph
    img = prepare_radiograph("a.dcm", ResizeSpec(512, fit="pad"), NormalisationSpec())

Failures raise :class:`RadiographError` (a :class:`radpair.errors.DataError`) naming the
file and the reason, so batch jobs can record them instead of stopping.
"""

from radpair.data.io.decoded import Decoded, quantise
from radpair.data.io.geometry import (
    Fit,
    Resample,
    ResizeSpec,
    resize_to_square,
    scaled_shape,
)
from radpair.data.io.reader import (
    decode_radiograph,
    prepare_radiograph,
    read_radiograph,
    sniff_format,
)
from radpair.data.io.spec import (
    NormalisationSpec,
    OutputDType,
    RadiographError,
    RangeFallback,
    VoiMode,
)

__all__ = [
    "Decoded",
    "Fit",
    "NormalisationSpec",
    "OutputDType",
    "RadiographError",
    "RangeFallback",
    "Resample",
    "ResizeSpec",
    "VoiMode",
    "decode_radiograph",
    "prepare_radiograph",
    "quantise",
    "read_radiograph",
    "resize_to_square",
    "scaled_shape",
    "sniff_format",
]
