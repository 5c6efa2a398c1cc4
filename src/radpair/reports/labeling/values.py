"""Label values and mention statuses.

CheXpert-style labels are 1 (positive), 0 (negative), -1 (uncertain) or blank (None: not
mentioned); edema severity uses 0-3. A mention's status is one of three ConText values.
"""

from __future__ import annotations

import enum


class LabelValue(enum.IntEnum):
    """CheXpert-style label values; blank is ``None``."""

    POSITIVE = 1
    NEGATIVE = 0
    UNCERTAIN = -1


class Status(str, enum.Enum):
    """What the report says about one mention."""

    AFFIRMED = "affirmed"
    NEGATED = "negated"
    UNCERTAIN = "uncertain"

    @property
    def value_label(self) -> LabelValue:
        return _STATUS_VALUE[self]


_STATUS_VALUE = {
    Status.AFFIRMED: LabelValue.POSITIVE,
    Status.NEGATED: LabelValue.NEGATIVE,
    Status.UNCERTAIN: LabelValue.UNCERTAIN,
}


class CueKind(str, enum.Enum):
    PSEUDO = "pseudo"
    PRE_NEGATION_UNCERTAINTY = "pre_negation_uncertainty"
    NEGATION = "negation"
    UNCERTAINTY = "uncertainty"
    TERMINATOR = "terminator"


class Direction(str, enum.Enum):
    FORWARD = "forward"  # the cue precedes the mention ("no effusion")
    BACKWARD = "backward"  # the cue follows the mention ("effusion has resolved")
    BOTH = "both"


#: which cues win when several apply; lower first
KIND_PRIORITY = {
    CueKind.PSEUDO: 0,
    CueKind.PRE_NEGATION_UNCERTAINTY: 1,
    CueKind.NEGATION: 2,
    CueKind.UNCERTAINTY: 3,
    CueKind.TERMINATOR: 4,
}
