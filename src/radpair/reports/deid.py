"""De-identification masks, normalised to one token.

MIMIC-CXR masks protected text with ``___``, the IU X-ray collection with ``XXXX``, and
MIMIC-III style notes with ``[**...**]``. Mixing sources would teach a text encoder three
spellings of "something was removed here"; :func:`normalise_deid` maps all of them to
:data:`DEID_TOKEN`, one occurrence per mask.
"""

from __future__ import annotations

import re

#: the token every mask becomes (MIMIC-CXR's own spelling, so MIMIC text is unchanged)
DEID_TOKEN = "___"

DEID_MASK = re.compile(
    r"\[\*\*[^\]\r\n]{0,80}?\*\*\]"  # MIMIC-III [**Hospital 123**]
    r"|_{3,}"  # MIMIC-CXR ___
    r"|(?<![A-Za-z])X{4,}(?![a-z])"  # IU X-ray XXXX (also glued: XXXXPM, x-XXXX)
)


def find_deid_masks(text: str) -> list[tuple[int, int]]:
    """Spans of the de-identification masks in ``text``."""
    return [m.span() for m in DEID_MASK.finditer(text)]


def normalise_deid(text: str, token: str = DEID_TOKEN) -> str:
    """Replace every de-identification mask in ``text`` by ``token``."""
    return DEID_MASK.sub(token, text)
