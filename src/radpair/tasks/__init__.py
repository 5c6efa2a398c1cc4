"""Downstream tasks: label schemas checked where labels enter, and named tasks kept as data.

* :mod:`~radpair.tasks.schema` - :class:`LabelSchema` (binary, multi-label with the
  CheXpert uncertainty policies, multi-class, ordinal) and checked :class:`TaskLabels`.
* :mod:`~radpair.tasks.spec` - :class:`TaskSpec` and the built-in tasks of ``builtin.yaml``
  (``findings7``, ``edema_severity``, ``abnormal``, and one per real-dataset adapter).
"""

from radpair.tasks.schema import LabelSchema, SchemaKind, TaskLabels
from radpair.tasks.spec import LABEL_SOURCES, TaskSpec, load_task, resolve_split, task_labels, task_names

__all__ = ["LABEL_SOURCES", "LabelSchema", "SchemaKind", "TaskLabels", "TaskSpec", "load_task", "resolve_split",
           "task_labels", "task_names"]
