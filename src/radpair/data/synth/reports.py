"""Write the radiology report of one study the way radiologists write them.

Two stages, kept apart on purpose:

1. *What the radiologist concludes* (:func:`read_study`): the truth, passed through a
   small, knob-controlled rate of human error. Subtle findings (a small effusion,
   vascular congestion, a small nodule) are more often omitted, hedged, negated or
   mis-graded than obvious ones, and a few absent findings are called anyway.
2. *How it is written* (:func:`write_report`): section layout and header spelling,
   phrasing per finding with severity and laterality words, pertinent negatives,
   hedges, comparison with the patient's previous study, MIMIC-style ``___``
   de-identification and dictation line wrapping.

Every sentence carries the labels it states, so the report's own labels
(``written``: 1 affirmed, 0 negated, -1 uncertain, None not mentioned) are exact by
construction, and edema severity words follow the keyword levels of Chauhan et al.
(MICCAI 2020, Supplementary Table 1) so a keyword labeler recovers them.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np

from radpair.data.synth.cohort import PatientPlan, StudyPlan
from radpair.data.synth.config import SynthConfig
from radpair.data.synth.findings import FINDINGS, LOBE_SIDE, Findings, Nodule

# --- section headers -----------------------------------------------------------------------
SECTION_HEADERS: dict[str, tuple[str, ...]] = {
    "EXAMINATION": ("EXAMINATION:",),
    "INDICATION": ("INDICATION:", "HISTORY:", "Indication:", "CLINICAL HISTORY:"),
    "TECHNIQUE": ("TECHNIQUE:",),
    "COMPARISON": ("COMPARISON:", "Comparison:"),
    "FINDINGS": ("FINDINGS:", "Findings:", "FINDING:"),
    "IMPRESSION": ("IMPRESSION:", "Impression:", "CONCLUSION:"),
}
_HEADER_P = {
    "INDICATION": (0.6, 0.2, 0.1, 0.1),
    "COMPARISON": (0.8, 0.2),
    "FINDINGS": (0.72, 0.18, 0.1),
    "IMPRESSION": (0.7, 0.18, 0.12),
}
# "(no) acute cardiopulmonary process" is a level-0 edema keyword in Chauhan et al.'s Table 1;
# the other normal boilerplates state nothing about edema a keyword labeler could read
NO_ACUTE = ("No acute cardiopulmonary process.", "No evidence of acute cardiopulmonary process.",
            "No acute cardiopulmonary process identified.")
NORMAL_IMPRESSIONS = ("No acute cardiopulmonary abnormality.", "No acute intrathoracic process.",
                      "Normal chest radiograph.", "No acute cardiopulmonary abnormality identified.")

LOBE_NAMES = {"RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe",
              "LUL": "left upper lobe", "lingula": "lingula", "LLL": "left lower lobe"}
SEVERITY_WORDS = {1: "mild", 2: "moderate", 3: "severe"}

# Chauhan et al. keyword levels: 1 vascular congestion, 2 interstitial edema, 3 alveolar edema
EDEMA_PHRASES = {
    1: ("mild pulmonary vascular congestion", "pulmonary vascular congestion", "mild vascular congestion",
        "cephalization of the pulmonary vasculature", "mild pulmonary vascular engorgement", "hilar engorgement",
        "mild vascular plethora", "pulmonary vascular prominence"),
    2: ("moderate interstitial edema", "mild interstitial edema", "interstitial pulmonary edema",
        "interstitial edema with Kerley B lines", "mild interstitial pulmonary edema",
        "interstitial edema with peribronchial cuffing and hazy hila"),
    3: ("severe alveolar edema", "alveolar edema", "severe pulmonary edema",
        "bilateral perihilar alveolar opacities consistent with alveolar edema",
        "diffuse alveolar infiltrates consistent with severe pulmonary edema",
        "perihilar airspace opacities in a batwing distribution consistent with alveolar edema"),
}


@dataclass(frozen=True)
class Reading:
    """What the radiologist concluded about each finding (before wording).

    ``state`` per finding: 1 present, 0 absent, -1 uncertain, None silent (omitted).
    Details (severity, side, size) may differ from the truth when mis-graded.
    """

    state: dict[str, int | None]
    findings: Findings          # the findings as the reader sees them (grades possibly wrong)
    errors: tuple[str, ...]     # e.g. ("omit:pleural_effusion", "misgrade:edema")


@dataclass
class Report:
    """A written report plus everything needed to check it."""

    text: str
    written: dict[str, int | None]
    written_edema_severity: int | None
    style: str                          # "sectioned" or "paragraph"
    sections: tuple[str, ...]           # canonical section names in order of appearance
    headers: tuple[str, ...]            # the exact header strings used, same order
    errors: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------
# stage 1: reading
# ---------------------------------------------------------------------------------------------

def _subtlety(f: Findings, name: str, view: str) -> float:
    """How easy a present finding is to miss or under-call (1 = average)."""
    w = 1.0
    if name == "edema":
        w = {1: 1.7, 2: 0.9, 3: 0.35}[f.edema_severity]
    elif name == "cardiomegaly":
        w = {"mild": 1.5, "moderate": 0.6, "severe": 0.2}[f.cardiomegaly_grade]
    elif name == "pleural_effusion":
        w = {"small": 1.7, "moderate": 0.6, "large": 0.2}[f.effusion_size]
    elif name == "pneumothorax":
        w = {"small": 1.6, "moderate": 0.6, "large": 0.25}[f.pneumothorax_size]
    elif name == "consolidation":
        w = 1.1 if f.consolidation_pattern == "patchy" else 0.6
    elif name == "atelectasis":
        w = 1.3 if not f.atelectasis_kind.startswith("lobar") else 0.7
    elif name == "nodule":
        w = 1.8 if f.nodule is not None and f.nodule.diameter_mm < 14 else 1.0
    return w * (1.2 if view == "AP" else 1.0)


_FALSE_CALL = {"edema": 0.25, "cardiomegaly": 0.25, "pleural_effusion": 0.15, "pneumothorax": 0.02,
               "consolidation": 0.2, "atelectasis": 0.45, "nodule": 0.08}


def read_study(f: Findings, view: str, rng: np.random.Generator, cfg: SynthConfig) -> Reading:
    """Apply the reader's errors to the truth; rates scale with ``cfg.report_noise``."""
    truth = f.labels()
    state: dict[str, int | None] = {}
    errors: list[str] = []
    seen = f
    q = float(cfg.report_noise)
    for name in FINDINGS:
        if truth[name]:
            if rng.random() < min(0.95, q * _subtlety(f, name, view)):
                kind = ("omit", "hedge", "negate")[int(rng.choice(3, p=(0.45, 0.35, 0.2)))]
                state[name] = {"omit": None, "hedge": -1, "negate": 0}[kind]
                errors.append(f"{kind}:{name}")
            else:
                state[name] = 1
        else:
            r = rng.random()
            if r < q * 0.1 * _FALSE_CALL[name]:
                state[name] = 1
                errors.append(f"false:{name}")
            elif r < q * 0.35 * _FALSE_CALL[name]:
                state[name] = -1  # a hedge about something absent: a real report habit, not a label error
            else:
                state[name] = 0
    # mis-grading: the finding is called, but with the wrong grade
    if state["edema"] == 1 and truth["edema"] and rng.random() < q * 0.8:
        sev = f.edema_severity
        new = sev + (1 if sev == 1 else (-1 if sev == 3 else int(rng.choice((-1, 1)))))
        seen = seen.with_(edema_severity=new)
        errors.append("misgrade:edema")
    if state["pleural_effusion"] == 1 and truth["pleural_effusion"] and rng.random() < q * 0.5:
        sizes = ("small", "moderate", "large")
        i = sizes.index(f.effusion_size)
        seen = seen.with_(effusion_size=sizes[min(2, max(0, i + int(rng.choice((-1, 1)))))])
        errors.append("misgrade:pleural_effusion")
    # a false call needs details to be written with
    if state["edema"] == 1 and not truth["edema"]:
        seen = seen.with_(edema_severity=1)
    if state["pleural_effusion"] == 1 and not truth["pleural_effusion"]:
        seen = seen.with_(effusion_side="right" if rng.random() < 0.5 else "left", effusion_size="small")
    if state["cardiomegaly"] == 1 and not truth["cardiomegaly"]:
        seen = seen.with_(ctr=0.52)
    if state["atelectasis"] == 1 and not truth["atelectasis"]:
        seen = seen.with_(atelectasis_kind="bibasilar")
    if state["consolidation"] == 1 and not truth["consolidation"]:
        seen = seen.with_(consolidation_lobe="RLL" if rng.random() < 0.5 else "LLL", consolidation_pattern="patchy")
    if state["pneumothorax"] == 1 and not truth["pneumothorax"]:
        seen = seen.with_(pneumothorax_side="right" if rng.random() < 0.5 else "left", pneumothorax_size="small")
    if state["nodule"] == 1 and not truth["nodule"]:
        seen = seen.with_(nodule=Nodule("right", 0.3, -0.2, 8.0))
    return Reading(state, seen, tuple(errors))


# ---------------------------------------------------------------------------------------------
# stage 2: wording
# ---------------------------------------------------------------------------------------------

@dataclass
class _Sentence:
    text: str
    labels: dict[str, int]
    edema_level: int | None = None


class _Writer:
    """Phrase bank; every method returns sentences tagged with the labels they state."""

    def __init__(self, rng: np.random.Generator, f: Findings, reading: Reading, prior: Findings | None,
                 view: str) -> None:
        self.rng, self.f, self.reading, self.prior, self.view = rng, f, reading, prior, view

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    # --- per finding -------------------------------------------------------------------
    def edema(self, state: int | None) -> list[_Sentence]:
        f, prior = self.f, self.prior
        if state is None:
            return []
        if state == 0:
            if prior is not None and prior.edema_severity > 0 and self.chance(0.6):
                return [_Sentence(self.pick(("Interval resolution of pulmonary edema.",
                                             "Previously seen pulmonary edema has resolved.",
                                             "No residual pulmonary edema.")), {"edema": 0}, 0)]
            return [_Sentence(self.pick(("No pulmonary edema.", "No evidence of pulmonary edema.",
                                         "No vascular congestion.",
                                         "There is no pulmonary vascular congestion or edema.",
                                         "No signs of fluid overload.", "There is no pulmonary edema.")),
                              {"edema": 0}, 0)]
        if state == -1:
            return [_Sentence(self.pick(("Possible mild interstitial edema.",
                                         "Cannot exclude mild pulmonary vascular congestion.",
                                         "Perihilar haziness may represent mild interstitial edema.",
                                         "Questionable mild pulmonary vascular congestion.")), {"edema": -1})]
        sev = f.edema_severity
        phrase = self.pick(EDEMA_PHRASES[sev])
        if prior is not None and prior.edema_severity > 0 and self.chance(0.65):
            ps = prior.edema_severity
            if ps == sev:
                text = self.pick((f"Unchanged {phrase}.", f"Persistent {phrase}.", f"Stable {phrase}.",
                                  f"Again seen is {phrase}.",
                                  f"{phrase[0].upper() + phrase[1:]}, unchanged from prior."))
            elif ps > sev:
                text = self.pick((f"Interval improvement in pulmonary edema, now {phrase}.",
                                  f"Improving pulmonary edema, with residual {phrase}.",
                                  f"Decreased pulmonary edema; there is now {phrase}."))
            else:
                text = self.pick((f"Worsening pulmonary edema, now {phrase}.",
                                  f"Interval increase in pulmonary edema, now with {phrase}.",
                                  f"Progression to {phrase}."))
        elif prior is not None and self.chance(0.4):
            text = f"New {phrase}."
        else:
            text = self.pick((f"{phrase[0].upper() + phrase[1:]}.", f"There is {phrase}.",
                              f"Findings are consistent with {phrase}.", f"{phrase[0].upper() + phrase[1:]} is noted."))
        return [_Sentence(text, {"edema": 1}, sev)]

    def cardiomegaly(self, state: int | None) -> list[_Sentence]:
        f, prior = self.f, self.prior
        if state is None:
            return []
        if state == 0:
            return [_Sentence(self.pick(("Heart size is normal.", "The heart is normal in size.", "Normal heart size.",
                                         "The cardiac silhouette is within normal limits.",
                                         "Cardiomediastinal silhouette is normal.",
                                         "The cardiomediastinal silhouette is within normal limits for size "
                                         "and contour.",
                                         "Heart size and mediastinal contours are normal.")), {"cardiomegaly": 0})]
        if state == -1:
            opts = ["Possible mild cardiomegaly.", "Borderline heart size, cannot exclude mild cardiomegaly.",
                    "The heart size may be mildly enlarged."]
            if self.view == "AP":
                opts.append("Heart size is difficult to assess on this AP view, possibly mildly enlarged.")
            return [_Sentence(self.pick(opts), {"cardiomegaly": -1})]
        grade = f.cardiomegaly_grade or "mild"
        adv = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}[grade]
        opts = {"mild": ["Mild cardiomegaly.", "The heart is mildly enlarged.", "Mildly enlarged cardiac silhouette.",
                         "Heart size is mildly enlarged."],
                "moderate": ["Moderate cardiomegaly.", "The cardiac silhouette is moderately enlarged.",
                             "Moderately enlarged cardiac silhouette.", "Enlarged cardiac silhouette."],
                "severe": ["Severe cardiomegaly.", "Marked cardiomegaly.", "The heart is markedly enlarged.",
                           "Severely enlarged cardiac silhouette."]}[grade]
        if prior is not None and prior.cardiomegaly and self.chance(0.6):
            opts = [f"Stable {grade} cardiomegaly.", f"Unchanged {grade} cardiomegaly.",
                    f"The heart remains {adv} enlarged.", "Cardiomegaly is unchanged.",
                    f"{grade.capitalize()} cardiomegaly, unchanged from prior."]
        return [_Sentence(self.pick(opts), {"cardiomegaly": 1})]

    def _effusion_phrase(self, f: Findings) -> str:
        size, side = f.effusion_size, f.effusion_side
        if side == "bilateral":
            return self.pick((f"{size} bilateral pleural effusions",
                              "bilateral pleural effusions, right greater than left", f"{size} bilateral effusions",
                              f"{size} right and smaller left pleural effusions"))
        return self.pick((f"{size} {side} pleural effusion", f"{size} {side} effusion",
                          f"{size} {side}-sided pleural effusion"))

    def effusion(self, state: int | None) -> list[_Sentence]:
        f, prior = self.f, self.prior
        if state is None or state == 0:
            if state == 0 and prior is not None and prior.effusion_side and self.chance(0.6):
                side = "bilateral pleural effusions" if prior.effusion_side == "bilateral" else \
                    f"{prior.effusion_side} pleural effusion"
                return [_Sentence(self.pick((f"Interval resolution of the previously seen {side}.",
                                             f"The previously seen {side} has resolved.")), {"pleural_effusion": 0})]
            return []  # plain negatives are combined with others in _negatives
        if state == -1:
            side = f.effusion_side if f.effusion_side in ("left", "right") else self.pick(("left", "right"))
            return [_Sentence(self.pick((f"Possible small {side} pleural effusion.",
                                         f"Trace {side} pleural effusion cannot be excluded.",
                                         f"Questionable small {side} effusion.",
                                         f"Blunting of the {side} costophrenic angle may reflect a small effusion or "
                                         "pleural thickening.")), {"pleural_effusion": -1})]
        phrase = self._effusion_phrase(f)
        cap = phrase[0].upper() + phrase[1:]
        if f.effusion_side == "bilateral":
            opts = [f"{cap}.", f"There are {phrase}.", f"{cap} are present."]
        else:
            opts = [f"{cap}.", f"There is a {phrase}.", f"{cap} is present."]
        if f.effusion_size == "small" and f.effusion_side in ("left", "right"):
            opts.append(f"Blunting of the {f.effusion_side} costophrenic angle consistent with a small "
                        "pleural effusion.")
        if self.view == "AP" and f.effusion_side in ("left", "right"):
            opts.append(f"Layering {f.effusion_side} pleural effusion, {f.effusion_size} in size.")
        if prior is not None and prior.effusion_side and self.chance(0.6):
            if prior.effusion_size == f.effusion_size:
                opts = [f"Unchanged {phrase}.", f"Persistent {phrase}.", f"Stable {phrase}.",
                        f"{cap}, unchanged from prior."]
            else:
                word = "Increased" if ("small", "moderate", "large").index(f.effusion_size) > \
                    ("small", "moderate", "large").index(prior.effusion_size) else "Decreased"
                opts = [f"{word} pleural effusion, now {phrase}.", f"{word} size of the {phrase.split(' ', 1)[1]}."]
        elif prior is not None and self.chance(0.35):
            opts = [f"New {phrase}."]
        return [_Sentence(self.pick(opts), {"pleural_effusion": 1})]

    def pneumothorax(self, state: int | None) -> list[_Sentence]:
        f, prior = self.f, self.prior
        if state is None or state == 0:
            if state == 0 and prior is not None and prior.pneumothorax_side and self.chance(0.6):
                return [_Sentence(f"Interval resolution of the {prior.pneumothorax_side} pneumothorax.",
                                  {"pneumothorax": 0})]
            return []
        if state == -1:
            side = f.pneumothorax_side or self.pick(("left", "right"))
            return [_Sentence(self.pick((f"Cannot exclude a tiny {side} apical pneumothorax.",
                                         f"Possible small {side} apical pneumothorax.",
                                         f"Questionable {side} apical pneumothorax; consider repeat imaging.")),
                              {"pneumothorax": -1})]
        size, side = f.pneumothorax_size, f.pneumothorax_side
        opts = [f"{size.capitalize()} {side} apical pneumothorax.", f"There is a {size} {side} pneumothorax.",
                f"{size.capitalize()} {side}-sided pneumothorax."]
        if f"chest_tube_{side}" in f.devices:
            opts.append(f"{size.capitalize()} {side} pneumothorax with a {side} chest tube in place.")
        if prior is not None and prior.pneumothorax_side == side and self.chance(0.6):
            opts = [f"Persistent {size} {side} pneumothorax.", f"{side.capitalize()} pneumothorax, now {size}.",
                    f"Unchanged {size} {side} pneumothorax."]
        return [_Sentence(self.pick(opts), {"pneumothorax": 1})]

    def consolidation(self, state: int | None, atel_state: int | None) -> list[_Sentence]:
        f, prior = self.f, self.prior
        if state is None or state == 0:
            if state == 0 and prior is not None and prior.consolidation_lobe and self.chance(0.5):
                return [_Sentence(f"Interval resolution of the {LOBE_NAMES[prior.consolidation_lobe]} consolidation.",
                                  {"consolidation": 0})]
            return []
        lobe = f.consolidation_lobe or "RLL"
        name = LOBE_NAMES[lobe]
        base = f"{LOBE_SIDE[lobe]} base"
        if state == -1:
            if atel_state in (-1, None) and lobe in ("RLL", "LLL"):
                return [_Sentence(self.pick((f"Opacity at the {base} may reflect atelectasis versus consolidation.",
                                             f"Patchy {base} opacity, atelectasis versus consolidation.")),
                                  {"consolidation": -1, "atelectasis": -1})]
            return [_Sentence(self.pick((f"Opacity in the {name} may represent early consolidation.",
                                         f"Possible consolidation in the {name}.",
                                         f"Subtle opacity in the {name}, cannot exclude consolidation.")),
                              {"consolidation": -1})]
        pattern = f.consolidation_pattern or "patchy"
        opts = [f"{pattern.capitalize()} consolidation in the {name}.",
                f"Focal consolidation in the {name}, concerning for pneumonia.",
                f"{name[0].upper() + name[1:]} consolidation with air bronchograms.",
                f"Airspace consolidation in the {name}, compatible with pneumonia in the appropriate clinical setting."]
        if lobe in ("RLL", "LLL"):
            opts.append(f"{pattern.capitalize()} consolidation at the {base}.")
        if prior is not None and prior.consolidation_lobe == lobe and self.chance(0.6):
            opts = [f"Persistent {name} consolidation.", f"Slowly improving {name} consolidation.",
                    f"Unchanged {name} consolidation."]
        elif prior is not None and self.chance(0.3):
            opts = [f"New {name} consolidation."]
        return [_Sentence(self.pick(opts), {"consolidation": 1})]

    def atelectasis(self, state: int | None) -> list[_Sentence]:
        f, prior = self.f, self.prior
        if state is None:
            return []
        if state == 0:
            return [_Sentence("No atelectasis.", {"atelectasis": 0})] if self.chance(0.05) else []
        kind = f.atelectasis_kind or "bibasilar"
        if state == -1:
            where = "bases" if kind == "bibasilar" else f"{'right' if 'R' in kind or 'right' in kind else 'left'} base"
            return [_Sentence(self.pick((f"Streaky opacity at the {where} may represent atelectasis.",
                                         f"Possible atelectasis at the {where}.",
                                         f"Linear opacity at the {where}, possibly atelectasis or scarring.")),
                              {"atelectasis": -1})]
        if kind == "bibasilar":
            opts = ["Bibasilar atelectasis.", "Mild bibasilar atelectasis.",
                    "Streaky bibasilar opacities consistent with atelectasis.", "Bibasilar plate-like atelectasis."]
        elif kind.startswith("plate"):
            side = kind.split("_")[1]
            opts = [f"Linear atelectasis at the {side} base.", f"Plate-like atelectasis in the {side} lower lung.",
                    f"Subsegmental atelectasis at the {side} base.", f"Mild {side} basilar atelectasis."]
        else:
            lobe = kind.split("_")[1]
            name = LOBE_NAMES[lobe]
            cap = name[0].upper() + name[1:]
            opts = [f"{cap} collapse.", f"{cap} atelectasis with volume loss.", f"Volume loss with {name} atelectasis."]
            if lobe == "LLL":
                opts.append("Retrocardiac opacity consistent with left lower lobe atelectasis.")
        if prior is not None and prior.atelectasis_kind == kind and self.chance(0.5):
            opts = [f"Unchanged {o[0].lower() + o[1:]}" for o in opts[:2]]
        return [_Sentence(self.pick(opts), {"atelectasis": 1})]

    def nodule(self, state: int | None) -> list[_Sentence]:
        f, prior = self.f, self.prior
        if state is None:
            return []
        if state == 0:
            return []  # negatives are grouped in _negatives
        nd = f.nodule
        side = nd.side if nd is not None else "right"
        vert = nd.vertical if nd is not None else 0.0
        zone = self.pick((f"{side} {'upper' if vert < -0.3 else ('mid' if vert < 0.2 else 'lower')} lung",
                          f"{side} {'upper' if vert < -0.3 else ('mid' if vert < 0.2 else 'lower')} lung zone"))
        if state == -1:
            return [_Sentence(self.pick((f"Possible nodule in the {zone}, which may represent a nipple shadow; "
                                         "repeat with nipple markers could be obtained.",
                                         f"Questionable nodular opacity in the {zone}.",
                                         f"Possible small nodule projecting over the {zone}.")), {"nodule": -1})]
        mm = int(nd.diameter_mm) if nd is not None else 8
        opts = [f"{mm} mm nodule in the {zone}.", f"A {mm / 10:.1f} cm nodular opacity in the {zone}.",
                f"Rounded {mm} mm nodular density projecting over the {zone}; recommend chest CT for further "
                "evaluation.", f"There is a {mm} mm pulmonary nodule in the {zone}."]
        if prior is not None and prior.nodule is not None and self.chance(0.6):
            opts = [f"Redemonstrated {mm} mm {zone} nodule.", f"Unchanged {mm} mm nodule in the {zone}.",
                    f"Stable {zone} nodule."]
        return [_Sentence(self.pick(opts), {"nodule": 1})]

    def negatives(self, names: list[str]) -> list[_Sentence]:
        """Pertinent negatives, grouped the way they are usually dictated."""
        out: list[_Sentence] = []
        names = list(names)
        words = {"pleural_effusion": ("pleural effusion", "effusion"), "pneumothorax": ("pneumothorax",),
                 "consolidation": ("focal consolidation", "consolidation")}
        group = [n for n in ("consolidation", "pleural_effusion", "pneumothorax") if n in names]
        if len(group) >= 2 and self.chance(0.3):  # "no pneumothorax or effusion" as often as the reverse
            group = group[::-1]
        if group:
            if len(group) >= 2 and self.chance(0.75):
                parts = [self.pick(words[n]) for n in group]
                joined = parts[0] if len(parts) == 1 else (", ".join(parts[:-1]) + (" or " if len(parts) == 2
                                                                                     else ", or ") + parts[-1])
                lead = self.pick(("No", "There is no", "No evidence of", "Negative for"))
                if "consolidation" in group and self.chance(0.4):
                    rest = [p for n, p in zip(group, parts) if n != "consolidation"]
                    tail = rest[0] if len(rest) == 1 else ", ".join(rest[:-1]) + ", or " + rest[-1]
                    text = f"The lungs are clear without focal consolidation, {tail}." if len(rest) > 1 else \
                        f"The lungs are clear without focal consolidation or {tail}."
                else:
                    text = f"{lead} {joined}."
                out.append(_Sentence(text, {n: 0 for n in group}))
            else:
                for n in group:
                    out.append(_Sentence(self.pick({"consolidation": ("No focal consolidation.",
                                                                      "Lungs are clear without focal consolidation.",
                                                                      "There is no focal airspace consolidation."),
                                                    "pleural_effusion": ("No pleural effusion.", "No effusion.",
                                                                         "There is no pleural effusion."),
                                                    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.",
                                                                     "No evidence of pneumothorax.")}[n]), {n: 0}))
        if "nodule" in names:
            out.append(_Sentence(self.pick(("No nodules or masses.", "No suspicious pulmonary nodules.",
                                            "No focal nodule or mass.")), {"nodule": 0}))
        return out

    def devices(self) -> list[str]:
        f, prior = self.f, self.prior
        out = []
        prior_dev = set(prior.devices) if prior is not None else set()
        if prior is not None and prior_dev and set(f.devices) == prior_dev and self.chance(0.5):
            return [self.pick(("Support devices are unchanged in position.", "Lines and tubes are unchanged.",
                               "Monitoring and support devices are stable."))]
        for d in f.devices:
            if d == "ett":
                cm = self.pick(("3.5", "4", "4.5", "5", "6"))
                out.append(self.pick((f"Endotracheal tube terminates {cm} cm above the carina.",
                                      f"ET tube tip is {cm} cm above the carina.",
                                      "Endotracheal tube is in standard position.")))
            elif d == "ng":
                out.append(self.pick(("Enteric tube courses below the diaphragm with tip in the stomach.",
                                      "Nasogastric tube tip is in the stomach.",
                                      "An orogastric tube extends into the stomach.")))
            elif d == "cvc_rij":
                out.append(self.pick(("Right internal jugular central venous catheter terminates in the mid SVC.",
                                      "Right IJ line tip is in the lower SVC.")))
            elif d == "cvc_lsc":
                out.append("Left subclavian central venous catheter terminates in the SVC.")
            elif d == "picc":
                out.append(self.pick(("Right PICC line terminates in the lower SVC.",
                                      "Right-sided PICC with tip at the cavoatrial junction.")))
            elif d == "pacemaker":
                out.append(self.pick(("Left chest wall pacemaker with leads in the right atrium and right ventricle.",
                                      "Dual-lead pacemaker is unchanged in position.")))
            elif d.startswith("chest_tube"):
                out.append(f"{d.split('_')[-1].capitalize()} chest tube in place.")
        for d in sorted(prior_dev - set(f.devices)):
            if d == "ett" and self.chance(0.7):
                out.append("Interval extubation.")
            elif d == "ng" and self.chance(0.5):
                out.append("Interval removal of the enteric tube.")
        return out


def _indication(rng: np.random.Generator, patient: PatientPlan, study: StudyPlan) -> str:
    """A clinical question that correlates with, but does not spell out, the findings."""
    f = study.findings
    man = "woman" if patient.female else "man"
    sexw = "F" if patient.female else "M"
    opts = []
    if study.setting == "icu":
        if "ett" in f.devices:
            opts += ["Intubated patient, evaluate endotracheal tube position.",
                     "Intubated, assess for interval change."]
        opts += ["Hypoxia.", f"___-year-old {man} in the ICU with worsening respiratory status.",
                 "Evaluate for interval change."]
        if f.devices and any(d.startswith(("cvc", "picc")) for d in f.devices):
            opts += ["Line placement, evaluate position and for pneumothorax."]
    if patient.heart_failure:
        opts += [f"___-year-old {man} with CHF, evaluate for pulmonary edema.", "Shortness of breath, history of CHF.",
                 f"___{sexw} with CHF exacerbation.", "Dyspnea, evaluate for fluid overload."]
    if f.consolidation or study.setting != "outpatient":
        opts += [f"___-year-old {man} with fever and cough, evaluate for pneumonia.", "Fever. Rule out pneumonia.",
                 f"___{sexw} with productive cough."]
    if f.pneumothorax:
        opts += ["Chest pain, evaluate for pneumothorax.", "Status post procedure, rule out pneumothorax."]
    if f.nodule is not None and study.index > 0:
        opts += ["Follow-up of pulmonary nodule."]
    opts += [f"___-year-old {man} with shortness of breath.", "Chest pain.", f"___-year-old {man} with chest pain.",
             "Preoperative evaluation.", "Cough.", f"___{sexw} with dyspnea.",
             "Evaluate for acute cardiopulmonary process."]
    return opts[int(rng.integers(len(opts)))]


def _merge(sentences: list[_Sentence]) -> tuple[dict[str, int | None], int | None]:
    """Report-level labels: affirmed beats uncertain beats negated (CheXpert convention)."""
    rank = {1: 3, -1: 2, 0: 1}
    out: dict[str, int | None] = {n: None for n in FINDINGS}
    for s in sentences:
        for name, lab in s.labels.items():
            if out[name] is None or rank[lab] > rank[out[name]]:
                out[name] = lab
    levels = [s.edema_level for s in sentences if s.edema_level is not None and s.labels.get("edema") == 1]
    sev = max(levels) if out["edema"] == 1 and levels else (0 if out["edema"] == 0 else None)
    return out, sev


def _wrap(text: str, width: int) -> str:
    return "\n ".join(textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False))


def write_report(patient: PatientPlan, study: StudyPlan, prior: StudyPlan | None, rng: np.random.Generator,
                 cfg: SynthConfig) -> Report:
    """Read the study (with errors) and write its report text."""
    view = study.views[0]
    reading = read_study(study.findings, view, rng, cfg)
    st = dict(reading.state)
    w = _Writer(rng, reading.findings, reading, prior.findings if prior is not None else None, view)
    sick = any(v == 1 or v == -1 for v in st.values())

    # decide which true negatives get dictated as pertinent negatives
    p_neg = {"edema": 0.55 if patient.heart_failure else 0.3, "cardiomegaly": 0.6, "pleural_effusion": 0.75,
             "pneumothorax": 0.7, "consolidation": 0.65, "atelectasis": 1.0, "nodule": 0.12}
    for name, v in st.items():
        if v == 0 and not w.chance(p_neg[name]) and not reading.errors.count(f"negate:{name}"):
            st[name] = None
    devices = w.devices()
    heart = w.cardiomegaly(st["cardiomegaly"])
    lungs = w.edema(st["edema"]) + w.consolidation(st["consolidation"], st["atelectasis"])
    if not any("atelectasis" in s.labels for s in lungs):
        lungs += w.atelectasis(st["atelectasis"])
    lungs += w.nodule(st["nodule"])
    pleura = w.effusion(st["pleural_effusion"]) + w.pneumothorax(st["pneumothorax"])
    stated = {n for s in lungs + pleura for n in s.labels}
    negs = w.negatives([n for n in ("consolidation", "pleural_effusion", "pneumothorax", "nodule")
                        if st[n] == 0 and n not in stated])
    findings_sents = heart + lungs + pleura + negs
    if not sick and w.chance(0.35):
        findings_sents.insert(0, _Sentence(w.pick(("The lungs are clear.", "Lungs are well expanded and clear.",
                                                   "The lungs are clear bilaterally.")), {}))
    bones = [] if not w.chance(0.25) else [w.pick(("No acute osseous abnormality.", "Osseous structures are intact.",
                                                   "Degenerative changes of the thoracic spine.",
                                                   "Visualized osseous structures are unremarkable."))]
    if prior is not None and not sick and w.chance(0.35):
        bones.append(w.pick(("No significant interval change.",
                             "Unchanged appearance of the chest compared to prior.")))

    # impression: positives and hedges restated concisely, or the normal boilerplate
    key = [s for s in heart + lungs + pleura if any(v != 0 for v in s.labels.values())]
    imp: list[_Sentence] = []
    if key:
        order = sorted(key, key=lambda s: -max(s.labels.values()))
        imp = [_Sentence(s.text, s.labels, s.edema_level) for s in order[: 1 + int(rng.integers(0, 3))]]
        if st["edema"] != 1 and st["edema"] != -1 and w.chance(0.15) and not any(
                n in ("pleural_effusion", "consolidation", "pneumothorax") for s in imp for n in s.labels):
            imp.append(_Sentence("Otherwise no acute cardiopulmonary process.", {"edema": 0}, 0))
    else:
        if st["edema"] is None or st["edema"] == 0:
            if w.chance(0.6):
                imp = [_Sentence(w.pick(NO_ACUTE), {"edema": 0}, 0)]
            else:
                imp = [_Sentence(w.pick(NORMAL_IMPRESSIONS), {})]
        if w.chance(0.2) or not imp:
            imp.append(_Sentence(w.pick(("No radiographic evidence of pneumonia.", "Stable chest.", "Clear lungs.")),
                                 {}))

    # layout
    style = "paragraph" if w.chance(cfg.paragraph_report_rate) else "sectioned"
    comparison = None
    if prior is not None:
        comparison = w.pick(("___.", "Chest radiograph from ___.", "Prior study dated ___.", "___ chest radiograph.",
                             "Comparison is made to the previous study from ___."))
    elif w.chance(0.5):
        comparison = w.pick(("None.", "None available.", "No prior studies."))
    indication = _indication(rng, patient, study)
    exam = {"PA": w.pick(("CHEST (PA AND LAT)", "CHEST (PA AND LATERAL)")) if "LATERAL" in study.views else
            "CHEST (PA)", "AP": w.pick(("CHEST (PORTABLE AP)", "PORTABLE CHEST"))}[view]
    sections: list[str] = []
    headers: list[str] = []
    if style == "paragraph":
        body = [indication]
        if prior is not None:
            body.append(w.pick(("Compared to prior study.", "Comparison is made to the prior exam.")))
        body += devices
        said = {x.text for x in findings_sents}
        body += [s.text for s in findings_sents] + [s.text for s in imp if s.text not in said]
        text = "FINAL REPORT\n " + " ".join(body)
        written, sev = _merge(findings_sents + imp)
        if cfg.line_wrap_rate and w.chance(cfg.line_wrap_rate):
            head, rest = text.split("\n ", 1)
            text = head + "\n " + _wrap(rest, int(rng.integers(60, 80)))
        return Report(text, written, sev, style, (), (), reading.errors)

    has_find = w.chance(0.88)
    has_imp = w.chance(0.92) or not has_find
    lines: list[str] = []
    if w.chance(0.5):
        lines.append("FINAL REPORT")
    parts: list[tuple[str, str]] = []
    if w.chance(0.6):
        parts.append(("EXAMINATION", exam))
    if w.chance(0.88):
        parts.append(("INDICATION", indication))
    if w.chance(0.15):
        if "LATERAL" in study.views:
            technique = w.pick(("Chest PA and lateral.", "PA and lateral views of the chest."))
        elif view == "AP":
            technique = w.pick(("Portable AP chest radiograph.", "Single frontal view of the chest."))
        else:
            technique = w.pick(("Single PA view of the chest.", "Frontal view of the chest."))
        parts.append(("TECHNIQUE", technique))
    if comparison is not None and w.chance(0.9):
        parts.append(("COMPARISON", comparison))
    used = []
    if has_find:
        ftxt = " ".join(devices + [s.text for s in findings_sents] + bones)
        if not ftxt:
            ftxt = "The lungs are clear."
        parts.append(("FINDINGS", ftxt))
        used += findings_sents
    if has_imp:
        if has_find:
            if len(imp) > 1 and w.chance(0.35):
                itxt = " ".join(f"{i + 1}. {s.text}" for i, s in enumerate(imp))
            else:
                itxt = " ".join(s.text for s in imp)
            used += imp
        else:  # the impression carries everything
            itxt = " ".join(devices + [s.text for s in findings_sents] +
                            [s.text for s in imp if s.text not in {x.text for x in findings_sents}])
            used += findings_sents + imp
        parts.append(("IMPRESSION", itxt))
    wrap = bool(cfg.line_wrap_rate) and w.chance(cfg.line_wrap_rate)
    width = int(rng.integers(60, 80))
    for name, content in parts:
        hdr = SECTION_HEADERS[name][0] if name not in _HEADER_P else \
            SECTION_HEADERS[name][int(rng.choice(len(SECTION_HEADERS[name]), p=_HEADER_P[name]))]
        sections.append(name)
        headers.append(hdr)
        if wrap:
            content = _wrap(content, width)
        if name in ("FINDINGS", "IMPRESSION") and w.chance(0.5):
            lines.append(f"{hdr}\n \n {content}")
        else:
            lines.append(f"{hdr} {content}")
    text = "\n \n ".join(lines)
    text = " " + text if w.chance(0.5) else text
    written, sev = _merge(used)
    return Report(text, written, sev, style, tuple(sections), tuple(headers), reading.errors)


__all__ = ["Report", "Reading", "read_study", "write_report", "SECTION_HEADERS", "EDEMA_PHRASES", "NO_ACUTE",
           "NORMAL_IMPRESSIONS",
           "LOBE_NAMES"]
