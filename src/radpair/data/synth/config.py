"""Difficulty knobs of the synthetic radiograph-report generator.

One flat dataclass so a YAML file or ``radpair.config.from_dict`` can set any knob and
so the resolved values can be stored in the corpus ``meta.json`` (a corpus is only
reproducible when the knobs that made it are recorded next to it). Presets exist
because people think in "easy / default / hard", not in a dozen multipliers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from radpair.config import deep_merge, from_dict, read_yaml_mapping, to_dict
from radpair.data.synth.findings import FINDINGS
from radpair.errors import ConfigError, unknown_choice_message

DIFFICULTIES = ("easy", "classic", "default", "hard", "pediatric_shift")
NEUTRAL_KNOBS: dict[str, Any] = {
    "body_scale": 1.0, "chest_aspect": 1.0, "heart_scale": 1.0, "exposure_gamma": 1.0, "exposure_contrast": 1.0,
    "exposure_brightness": 0.0, "noise_grain": 0.0, "device_rate": 1.0, "findings_only": [],
    "finding_prevalence": None,
}
"""Knobs added after generator version 2 with the value at which they change nothing (see
:meth:`SynthConfig.key_dict`)."""


@dataclass
class SynthConfig:
    """Knobs of the generator; the defaults are the calibrated corpus.

    The defaults are calibrated to the papers' from-scratch learning curves
    (``benchmarks/synth_calibration.py``, issue 10): a supervised ResNet trained from
    scratch with 100 labels sits near chance (macro AUC <= 0.62, every finding <= 0.85)
    and is good only with many labels (>= 0.78 with all of a 25,000-image corpus), and
    labels read from the report text agree with the drawn truth about 90 % of the time.
    The signs are drawn at half strength (``conspicuity`` 0.5) among more patient,
    exposure and positioning variation than before, and the heart's apparent size follows
    the breath. The earlier default, on which a small CNN learned from 100 labels almost
    as well as from thousands, is the ``classic`` preset; multipliers of 1.0 are its values.
    """

    conspicuity: float = 0.5
    """Scales the contrast / extent of every finding's radiographic sign (0 = invisible)."""
    noise: float = 1.3
    """Scales quantum mottle and low-frequency exposure noise."""
    anatomy_variation: float = 1.5
    """Scales patient-to-patient spread of anatomy, exposure and positioning."""
    distractor_rate: float = 1.0
    """Scales the probability of ECG leads, L/R markers, text burn-in and monitoring lines."""
    distractor_illness_link: float = 0.0
    """How much ECG leads and oxygen tubing follow illness, 0..1. At 0 (default) they appear
    at one rate on every image whatever the patient has, so they are pure distractors; at 1
    they appear far more often on "sick" studies (support devices, edema grade >= 2 or
    intensive care: ECG 0.55 vs 0.12, tubing 0.30 vs 0.04), as on real wards, which gives a
    model a shortcut to edema that has nothing to do with the lungs. In between the
    probabilities are interpolated linearly; the corpus-wide rate stays about the same.
    See ``radpair.data.synth.overlays.distractor_probabilities``."""
    heart_size_confounding: float = 1.0
    """How much the heart's apparent size on a frontal film departs from its true size with
    the breath and the projection, 0..3. Real cardiomegaly is read against these: a
    shallow inspiration or a portable AP film makes a normal heart look enlarged. At 1 the
    apparent cardiothoracic ratio is scaled by ``1 + 1.5 * v``, with ``v`` the film's
    shallowness of breath: at the default ``anatomy_variation`` of 1.5 about -0.11..0.11 on
    PA films and -0.01..0.21 on AP films (mean 0.10), so a normal heart of CTR 0.47 can look
    like 0.62 on a shallow AP film; the label stays the true CTR. 0 draws the true size."""
    report_noise: float = 0.08
    """Probability that a drawn finding is omitted, hedged or negated in the report text
    (weighted by how subtle the finding is); mis-grading and false mentions scale with it."""
    lateral_view_rate: float = 0.55
    """Share of PA studies that also contain a LATERAL image."""
    repeat_frontal_rate: float = 0.12
    """Share of AP studies that contain a second frontal image."""
    mean_studies_per_patient: float = 2.0
    """Average number of studies per patient (follow-ups give comparison sentences)."""
    max_studies_per_patient: int = 6
    paragraph_report_rate: float = 0.05
    """Share of reports written as one header-less paragraph."""
    line_wrap_rate: float = 0.5
    """Share of reports hard-wrapped at 60-80 characters like dictation systems do."""
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    """train / validate / test fractions of patients."""

    # --- population and scanner shift (a corpus from another hospital; ``pediatric_shift``) --------
    # At their defaults these knobs change nothing and draw no random numbers, so every
    # other preset's corpus stays byte-identical to the one made before they existed.
    body_scale: float = 1.0
    """Size of the patient on the film, 0.5..1.5. The whole patient (lungs, heart, bones, body
    outline) is magnified by it about the image centre, so below 1 the chest fills less of the
    film and more neck, shoulders and abdomen show, as on a small child's film (0.8: a chest
    about 4/5 of an adult's on the same field of view). Stored per patient as
    ``Anatomy.scale``; per-image positioning magnification varies on top. 1 = adult."""
    chest_aspect: float = 1.0
    """Width-to-height ratio of the thorax relative to an adult's, 0.6..1.6. Lateral sizes (lung
    positions and widths, hila, body outline) are multiplied by it; lung heights (apex and
    diaphragm domes about the hilar level, costophrenic recess, rib spacing) are divided by it.
    Above 1 the chest is shorter and rounder, as a child's boxy thorax; below 1 longer and
    narrower. 1 = the adult shape."""
    heart_scale: float = 1.0
    """Size of the heart and mediastinum relative to the thorax, 0.5..1.6. The drawn cardiac
    silhouette (width and height) and the mediastinal width are multiplied by it; the label
    stays the drawn cardiothoracic ratio before this scaling. Children's hearts and thymus are
    relatively larger (a normal infant's ratio reaches 0.6), so at 1.15 a normal heart looks
    enlarged to a model trained on adults. 1 = default."""
    exposure_gamma: float = 1.0
    """Multiplies every image's display gamma, 0.3..3: another vendor's look-up table. Above 1 the
    mid-tones are darker (blacker lungs), below 1 lighter and flatter. 1 = default."""
    exposure_contrast: float = 1.0
    """Multiplies every image's contrast about mid-grey, 0.2..3. 1 = default."""
    exposure_brightness: float = 0.0
    """Added to every image's brightness (display units, 1 = white to black), -0.5..0.5.
    0 = default."""
    noise_grain: float = 0.0
    """Correlation length of the quantum mottle as a share of the image side, 0..0.1 (the
    Gaussian sigma of the grain: 0.02 is 1.3 px at 64 px, 2.6 px at 128 px). 0 (default) is
    independent pixels; above 0 the mottle is blotchy, like another detector's or another
    processing's noise. Its standard deviation is kept, so ``noise`` still sets the amount."""
    device_rate: float = 1.0
    """Scales the probability of every support device (tubes, lines, pacemakers, chest tubes),
    0..1; 0 draws none, as on an outpatient children's set. 1 = the cohort model's rates."""
    findings_only: list[str] = field(default_factory=list)
    """Draw only these findings (names of ``FINDINGS``); every other finding's prevalence is 0
    (no edema, no enlarged heart, no effusion, ... and no chest tubes for them). Patients,
    settings, views and devices are drawn as before. Empty (default): all seven findings."""
    finding_prevalence: float | None = None
    """Share of studies that show the one finding of ``findings_only`` (needs exactly one), 0..1,
    drawn per study whatever the care setting (per patient for the patient-level cardiomegaly
    and nodule). ``None`` (default) keeps the cohort model's rate."""

    def validate(self) -> None:
        """Reject values that would silently produce a broken corpus."""
        for name in ("conspicuity", "noise", "anatomy_variation", "distractor_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 5.0:
                raise ConfigError(f"synth config key {name!r}: {value} is outside [0, 5]")
        for name in ("report_noise", "lateral_view_rate", "repeat_frontal_rate", "paragraph_report_rate",
                     "line_wrap_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"synth config key {name!r}: {value} is not a probability in [0, 1]")
        if not 0.0 <= self.heart_size_confounding <= 3.0:
            raise ConfigError(f"synth config key 'heart_size_confounding': {self.heart_size_confounding} "
                              "is outside [0, 3]")
        if not 0.0 <= self.distractor_illness_link <= 1.0:
            raise ConfigError(f"synth config key 'distractor_illness_link': {self.distractor_illness_link} "
                              "is outside [0, 1] (0 = distractors independent of illness, 1 = fully linked)")
        if self.mean_studies_per_patient < 1.0:
            raise ConfigError(f"synth config key 'mean_studies_per_patient': {self.mean_studies_per_patient} < 1")
        if not 1 <= self.max_studies_per_patient <= 50:
            raise ConfigError(f"synth config key 'max_studies_per_patient': {self.max_studies_per_patient} "
                              "is outside [1, 50]")
        for name, lo, hi, meaning in (
                ("body_scale", 0.5, 1.5, "1 = adult size, below 1 a smaller patient"),
                ("chest_aspect", 0.6, 1.6, "1 = adult width-to-height ratio, above 1 a rounder chest"),
                ("heart_scale", 0.5, 1.6, "1 = adult heart and mediastinum, above 1 relatively larger"),
                ("exposure_gamma", 0.3, 3.0, "a multiplier of the display gamma, 1 = default"),
                ("exposure_contrast", 0.2, 3.0, "a multiplier of the contrast, 1 = default"),
                ("exposure_brightness", -0.5, 0.5, "an offset in display units, 0 = default"),
                ("noise_grain", 0.0, 0.1, "a share of the image side, 0 = independent pixels"),
                ("device_rate", 0.0, 1.0, "a multiplier of every support device's probability")):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ConfigError(f"synth config key {name!r}: {value} is outside [{lo:g}, {hi:g}] ({meaning})")
        for name in self.findings_only:
            if name not in FINDINGS:
                raise ConfigError("synth config key 'findings_only': "
                                  + unknown_choice_message("finding", name, FINDINGS))
        if len(set(self.findings_only)) != len(self.findings_only):
            raise ConfigError(f"synth config key 'findings_only': {self.findings_only} names a finding twice")
        if self.finding_prevalence is not None:
            if len(self.findings_only) != 1:
                raise ConfigError(f"synth config key 'finding_prevalence' needs exactly one finding in "
                                  f"'findings_only' (the one it is the prevalence of), got {self.findings_only}")
            if not 0.0 <= self.finding_prevalence <= 1.0:
                raise ConfigError(f"synth config key 'finding_prevalence': {self.finding_prevalence} is not a "
                                  "probability in [0, 1]")
        fr = self.split_fractions
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(f"synth config key 'split_fractions': {fr} must be three non-negative "
                              "numbers (train, validate, test) summing to 1")

    def __post_init__(self) -> None:
        self.split_fractions = [float(f) for f in self.split_fractions]
        self.findings_only = [str(f) for f in self.findings_only]
        if self.finding_prevalence is not None:
            self.finding_prevalence = float(self.finding_prevalence)
        self.validate()

    def finding_rate(self, name: str) -> float | None:
        """The forced prevalence of finding ``name``: 0 when ``findings_only`` leaves it out,
        ``finding_prevalence`` for its one finding, ``None`` when the cohort model decides."""
        if not self.findings_only:
            return None
        if name not in self.findings_only:
            return 0.0
        return self.finding_prevalence

    @classmethod
    def preset(cls, difficulty: str = "default") -> "SynthConfig":
        """The named preset (``easy``, ``classic``, ``default``, ``hard``, ``pediatric_shift``)."""
        if difficulty not in _PRESETS:
            raise ConfigError(unknown_choice_message("synth difficulty", difficulty, DIFFICULTIES))
        return cls(**_PRESETS[difficulty])

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def key_dict(self) -> dict[str, Any]:
        """The knobs for a cache key: all of them except the population-shift knobs at their
        neutral values (:data:`NEUTRAL_KNOBS`). At those values the shift knobs draw nothing,
        so the corpus is byte-identical to one made before they existed; keyed on every knob,
        adding them re-made every cached demo corpus and with it every pretraining and
        transfer cell downstream (the seed-2 demo corpus re-made with them has the same pixels
        as before). A knob added later belongs in ``NEUTRAL_KNOBS`` on the same condition."""
        d = to_dict(self)
        for name, neutral in NEUTRAL_KNOBS.items():
            if d.get(name) == neutral:
                d.pop(name)
        return d


# every preset keeps distractor_illness_link at its default 0: difficulty should come from
# the signs of the findings, not from a shortcut (set it to 1 to study shortcut learning)
# the generator before calibration (issue 10): every finding at full strength, less variation
_CLASSIC: dict[str, Any] = dict(conspicuity=1.0, noise=1.0, anatomy_variation=1.0, heart_size_confounding=0.0)

_PRESETS: dict[str, dict[str, Any]] = {
    "easy": dict(_CLASSIC, conspicuity=1.8, noise=0.5, anatomy_variation=0.6, distractor_rate=0.4, report_noise=0.03),
    "classic": _CLASSIC,
    "default": {},
    "hard": dict(conspicuity=0.35, noise=1.6, anatomy_variation=1.8, heart_size_confounding=1.5, distractor_rate=1.6,
                 report_noise=0.16),
    # TIMNet's pediatric pneumonia set (Mendeley-V2) as another population on another scanner:
    # smaller, rounder chests with relatively larger hearts, a flatter look-up table with darker
    # mid-tones, coarser mottle, and one binary finding (consolidation, the pneumonia stand-in) at
    # the set's 73 % prevalence (4,273 pneumonia vs 1,583 normal). One frontal image per
    # patient, as in that set, and no tubes or lines; reports are still written. Conspicuity is
    # the value the TIMNet paper file used for its shifted corpus before this preset existed
    # (full-strength pneumonia, as in that set); its noise 1.2 is 1.0 here (correlated grain of
    # the same standard deviation looks much stronger than independent pixels) and its anatomy
    # variation 1.8 the default 1.5 (the shift knobs now carry the population change, and 1.8
    # with this look-up table clipped many lungs to black).
    "pediatric_shift": dict(
        body_scale=0.85, chest_aspect=1.1, heart_scale=1.15,
        exposure_gamma=1.15, exposure_contrast=0.9, exposure_brightness=0.04, noise=1.0, noise_grain=0.015,
        findings_only=["consolidation"], finding_prevalence=0.73, device_rate=0.0, conspicuity=1.3,
        mean_studies_per_patient=1.0, lateral_view_rate=0.0, repeat_frontal_rate=0.0),
}


def load_synth_config(difficulty: str = "default", path: str | Path | None = None,
                      overrides: Mapping[str, Any] | None = None) -> SynthConfig:
    """A preset, updated by an optional YAML file and then by a mapping (later wins).

    The YAML file may hold the keys at top level or under a ``synth:`` section, so one
    experiment file can carry the generator settings next to other sections.
    """
    data = to_dict(SynthConfig.preset(difficulty))
    if path is not None:
        loaded = read_yaml_mapping(path, "synth config file")
        if set(loaded) == {"synth"} and isinstance(loaded["synth"], dict):
            loaded = loaded["synth"]
        data = deep_merge(data, loaded)
    if overrides:
        data = deep_merge(data, dict(overrides))
    try:
        return from_dict(SynthConfig, data)
    except ConfigError as exc:
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from None


__all__ = ["SynthConfig", "DIFFICULTIES", "load_synth_config"]
