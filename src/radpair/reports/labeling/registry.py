"""The labeler registry: ``get_labeler("edema" | "chexpert" | "chestxray14", **opts)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from radpair.errors import ConfigError
from radpair.registry import Registry
from radpair.reports.labeling.base import DEFAULT_SECTIONS, Labeler
from radpair.reports.labeling.chexpert import load_chexpert_pack
from radpair.reports.labeling.edema import EdemaLabeler
from radpair.reports.labeling.observation import ObservationLabeler
from radpair.reports.labeling.packs import parse_observation_pack
from radpair.reports.resources import load_yaml

LABELERS: Registry[Labeler] = Registry("labeler schema")


@LABELERS.register("edema")
def edema(
    keywords: str = "table", uncertain: str = "affirm", sections: str = DEFAULT_SECTIONS, layout: str = "auto"
) -> Labeler:
    """Pulmonary edema severity 0-3 (Chauhan et al. 2020); see :class:`EdemaLabeler`."""
    return EdemaLabeler(keywords=keywords, uncertain=uncertain, sections=sections, layout=layout)


@LABELERS.register("chexpert")
def chexpert(phrases_dir: str | None = None, sections: str = DEFAULT_SECTIONS, layout: str = "auto") -> Labeler:
    """The 14 CheXpert observations, phrase lists read from a chexpert-labeler checkout."""
    return ObservationLabeler(load_chexpert_pack(phrases_dir), sections=sections, layout=layout)


@LABELERS.register("chestxray14")
def chestxray14(sections: str = DEFAULT_SECTIONS, layout: str = "auto") -> Labeler:
    """The 14 ChestX-ray14 findings plus ``normal``."""
    pack = parse_observation_pack(load_yaml("chestxray14.yaml"), "chestxray14.yaml")
    return ObservationLabeler(pack, sections=sections, layout=layout)


def _check_options(name: str, factory: Callable[..., Labeler], opts: dict[str, Any]) -> None:
    params = inspect.signature(factory).parameters
    bad = [k for k in opts if k not in params]
    if bad:
        from radpair.errors import closest

        hints = [f"{k!r}" + (f" (did you mean {closest(k, params)!r}?)" if closest(k, params) else "") for k in bad]
        raise ConfigError(
            f"labeler {name!r} has no option {', '.join(hints)}; valid options: {', '.join(params)}"
        )


def get_labeler(name: str, **opts: Any) -> Labeler:
    """Build a labeler by schema name; unknown names and options name the closest valid one."""
    factory = LABELERS.get(name)
    _check_options(name, factory, opts)
    return factory(**opts)


def labeler_names() -> list[str]:
    return LABELERS.names()
