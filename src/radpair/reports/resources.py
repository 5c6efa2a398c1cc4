"""Load the YAML data files shipped in :mod:`radpair.reports.data`.

Header synonyms, site rules and rule packs are data, not code, so that a new site or a
new phrase is a one-line edit that reviewers can read without reading Python.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from radpair.errors import ConfigError

DATA_PACKAGE = "radpair.reports.data"


def data_path(name: str) -> Path:
    """Path of a shipped data file (the package is installed as plain files)."""
    return Path(str(resources.files(DATA_PACKAGE).joinpath(name)))


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at top level")
    return data


@cache
def load_yaml(name: str) -> dict[str, Any]:
    """A shipped data file by name, parsed once per process."""
    return load_yaml_file(data_path(name))
