"""Error helpers shared by every component family.

Users mistype option names in YAML and on the command line; an error that names the
closest valid choice saves a round trip through the docs (MONAI does the same).
"""

from __future__ import annotations

import difflib
from typing import Iterable


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the valid choice closest to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_choice_message(kind: str, name: str, choices: Iterable[str]) -> str:
    choices = sorted(str(c) for c in choices)
    hint = closest(name, choices)
    msg = f"unknown {kind} {name!r}"
    if hint:
        msg += f"; did you mean {hint!r}?"
    return msg + f" (valid: {', '.join(choices)})"


class ConfigError(ValueError):
    """A configuration value or key is invalid; raised before any work starts."""


class ResourceMissing(ConfigError):
    """A labeler's (or other component's) external resource is not installed here, e.g. the
    CheXpert phrase lists that radpair does not ship. Callers with a declared fallback catch
    exactly this; every other configuration error still stops the run."""


class LabelFallbackWarning(UserWarning):
    """A task's fallback labeler stood in for one whose resources are missing."""


class DataError(ValueError):
    """Input data is malformed; the message names the file and the problem."""
