"""Pretraining methods, one module each, on one contract (:mod:`radpair.methods.base`).

Importing this package registers the built-in methods. A new method is one module here
(its ``Method`` subclass, config dataclass and ``@register_method``), imported below,
plus a YAML preset in ``configs/``.
"""

from radpair.methods.base import (
    METHODS,
    BuildContext,
    DatasetStats,
    ExtraRows,
    LabelNeed,
    Method,
    MethodConfig,
    MethodNeeds,
    Phase,
    TextField,
    build_method,
    method_class,
    method_needs,
    register_method,
    report_methods,
    resolve_method_config,
    text_keys,
)
from radpair.methods import chauhan, convirt, convirt_sections, radtex, supervised, tienet, timnet  # noqa: E402,F401  (registration)

__all__ = [
    "METHODS",
    "BuildContext",
    "DatasetStats",
    "ExtraRows",
    "LabelNeed",
    "Method",
    "MethodConfig",
    "MethodNeeds",
    "Phase",
    "TextField",
    "build_method",
    "method_class",
    "method_needs",
    "register_method",
    "report_methods",
    "resolve_method_config",
    "text_keys",
]
