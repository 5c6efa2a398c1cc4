"""Self-contained model packages: ``export_package`` writes one, ``load_package`` opens and
verifies it, ``predict`` applies it to image files.

    from radpair.package import export_package, load_package, predict
    export_package("pkg", transfer_run="transfer_out", arm="convirt:linear")
    predict("pkg", ["scans/"], "predictions.csv")

A package needs radpair alone to load and never unpickles (safetensors and JSON); see
``docs/package.md`` for its layout and what is checked.
"""

from __future__ import annotations

from typing import Any


def export_package(*args: Any, **kwargs: Any):
    """See :func:`radpair.package.export.export_package`."""
    from radpair.package.export import export_package as _export

    return _export(*args, **kwargs)


def load_package(*args: Any, **kwargs: Any):
    """See :func:`radpair.package.load.load_package`."""
    from radpair.package.load import load_package as _load

    return _load(*args, **kwargs)


def predict(*args: Any, **kwargs: Any):
    """See :func:`radpair.package.prediction.predict`."""
    from radpair.package.prediction import predict as _predict

    return _predict(*args, **kwargs)


__all__ = ["export_package", "load_package", "predict"]
