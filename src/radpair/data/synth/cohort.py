"""Sample patients, their follow-up studies and what is wrong in each study.

Real chest-radiograph cohorts are not independent draws per label: heart failure ties
edema, cardiomegaly and effusions together; ICU patients are imaged portably (AP),
carry tubes and lines and are followed daily; pneumothorax and nodules are rare; and
roughly four in ten studies show none of the findings. This module encodes that as a
small generative model per patient (latent heart failure and care setting, then a
Markov chain over studies), so the corpus has realistic co-occurrence, imbalance and
follow-up structure for comparison sentences.

Each patient is drawn from its own ``np.random.default_rng([seed, patient, stream])``,
so a patient looks the same whatever the corpus size or worker count.

``SynthConfig.findings_only`` / ``finding_prevalence`` override the model: a left-out
finding is never drawn (its process is skipped, it draws no random numbers), and the one
kept finding with a prevalence is present in each study with that probability. Without
them every draw is the cohort model's, in the same order as before they existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radpair.data.synth.anatomy import Anatomy, sample_anatomy
from radpair.data.synth.config import SynthConfig
from radpair.data.synth.findings import LOBES, Findings, Nodule

STREAM_COHORT, STREAM_ANATOMY, STREAM_REPORT, STREAM_SPLIT = 0, 1, 2, 3
SETTINGS = ("outpatient", "ward", "icu")


@dataclass(frozen=True)
class StudyPlan:
    """One imaging study: findings, setting and the views acquired."""

    index: int                    # 0-based position in the patient's timeline
    study_id: str
    findings: Findings
    views: tuple[str, ...]
    setting: str
    days_since_prior: int | None  # None for the first study


@dataclass(frozen=True)
class PatientPlan:
    number: int
    patient_id: str
    age: int
    female: bool
    heart_failure: bool
    anatomy: Anatomy
    studies: tuple[StudyPlan, ...]

    @property
    def n_images(self) -> int:
        return sum(len(s.views) for s in self.studies)


def _choice(rng: np.random.Generator, options, p) -> str:
    p = np.asarray(p, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _ctr(rng: np.random.Generator, enlarged: bool) -> float:
    if enlarged:
        return float(np.round(0.515 + 0.21 * rng.beta(1.6, 2.6), 3))
    return float(np.round(0.37 + 0.12 * rng.beta(2.6, 1.8), 3))


_EDEMA_START = {
    (True, "outpatient"): (0.45, 0.3, 0.18, 0.07),
    (True, "ward"): (0.15, 0.3, 0.32, 0.23),
    (True, "icu"): (0.12, 0.22, 0.33, 0.33),
    (False, "outpatient"): (0.985, 0.015, 0.0, 0.0),
    (False, "ward"): (0.9, 0.07, 0.03, 0.0),
    (False, "icu"): (0.74, 0.14, 0.08, 0.04),
}
_LOBE_P = (0.13, 0.1, 0.3, 0.1, 0.08, 0.29)  # RUL RML RLL LUL lingula LLL
_ATEL_KINDS = ("bibasilar", "plate_right", "plate_left", "lobar_LLL", "lobar_RLL", "lobar_RUL")
_ATEL_P = (0.4, 0.15, 0.18, 0.14, 0.06, 0.07)
_SIZES = ("small", "moderate", "large")


class _Course:
    """The evolving disease state of one patient across studies."""

    def __init__(self, rng: np.random.Generator, hf: bool, age: int, cfg: SynthConfig) -> None:
        self.rng, self.hf, self.age, self.cfg = rng, hf, age, cfg
        # forced prevalence per study-level process (None: the cohort model decides)
        self.rate = {name: cfg.finding_rate(name) for name in
                     ("edema", "pleural_effusion", "pneumothorax", "consolidation", "atelectasis")}
        self.edema = 0
        self.eff = {"right": 0, "left": 0}  # 0 none, 1 small, 2 moderate, 3 large
        self.ptx_side, self.ptx_size = "", 0
        self.cons_lobe, self.cons_pattern = "", ""
        self.atel = ""
        self.devices: set[str] = set()

    # --- individual processes -------------------------------------------------------
    def _forced(self, name: str) -> bool | None:
        """Whether a forced-prevalence finding is present in this study (``None``: not forced).
        A forced rate of 0 draws nothing."""
        p = self.rate[name]
        if p is None:
            return None
        return bool(p > 0 and self.rng.random() < p)

    def step_edema(self, setting: str, first: bool) -> None:
        rng = self.rng
        forced = self._forced("edema")
        if forced is not None:  # keep the grade while it persists, else draw one
            self.edema = (self.edema or 1 + int(rng.choice(3, p=(0.45, 0.35, 0.2)))) if forced else 0
            return
        if first:
            self.edema = int(rng.choice(4, p=_EDEMA_START[(self.hf, setting)]))
            return
        if self.hf:
            r = rng.random()
            self.edema = int(np.clip(self.edema + (-1 if r < 0.42 else (0 if r < 0.78 else 1)), 0, 3))
        elif self.edema > 0:
            self.edema = self.edema - 1 if rng.random() < 0.6 else self.edema
        elif setting == "icu" and rng.random() < 0.08:
            self.edema = 1

    def step_effusion(self, setting: str, first: bool) -> None:
        rng = self.rng
        forced = self._forced("pleural_effusion")
        if forced is not None:
            if not forced:
                self.eff = {"right": 0, "left": 0}
            elif not any(self.eff.values()):
                size = 1 + int(rng.choice(3, p=(0.55, 0.33, 0.12)))
                if rng.random() < 0.22:
                    self.eff = {"right": size, "left": max(1, size - int(rng.random() < 0.5))}
                else:
                    self.eff["right" if rng.random() < 0.55 else "left"] = size
            return
        if any(self.eff.values()) and not first:
            for sd in ("right", "left"):
                if self.eff[sd]:
                    r = rng.random()
                    if r < 0.25 + 0.15 * (self.eff[sd] == 1):
                        self.eff[sd] = 0
                    elif r < 0.8:
                        pass
                    else:
                        self.eff[sd] = int(np.clip(self.eff[sd] + (1 if self.edema >= 2 else -1), 1, 3))
            return
        p = 0.05 + 0.2 * self.hf + 0.09 * self.edema + 0.05 * (setting == "icu") + 0.03 * (setting == "ward")
        if not first:
            p *= 0.5
        if rng.random() < min(p, 0.85):
            size_p = (0.35, 0.45, 0.2) if self.edema >= 3 else (0.55, 0.33, 0.12)
            size = 1 + int(rng.choice(3, p=size_p))
            if rng.random() < 0.22 + 0.15 * self.edema:
                self.eff = {"right": size, "left": max(1, size - int(rng.random() < 0.5))}
            else:
                self.eff["right" if rng.random() < 0.55 else "left"] = size
            big = [sd for sd in ("right", "left") if self.eff[sd] >= 2]
            # drained effusions carry chest tubes too
            if big and setting != "outpatient" and rng.random() < 0.15 * self.cfg.device_rate:
                self.devices.add(f"chest_tube_{big[0]}")

    def step_devices(self, setting: str, first: bool) -> None:
        rng = self.rng
        keep = {d for d in sorted(self.devices) if d == "pacemaker" or rng.random() < 0.75}  # sorted: set order varies by process
        base = {"icu": dict(ett=0.5, ng=0.45, cvc=0.6), "ward": dict(ett=0.0, ng=0.07, cvc=0.2),
                "outpatient": dict(ett=0.0, ng=0.0, cvc=0.015)}[setting]
        scale = (1.0 if first else 0.5) * self.cfg.device_rate
        if "ett" not in keep and rng.random() < base["ett"] * scale:
            keep.add("ett")
        p_ng = 0.75 if "ett" in keep else base["ng"]
        if "ng" not in keep and rng.random() < p_ng * scale:
            keep.add("ng")
        if not keep & {"cvc_rij", "cvc_lsc", "picc"} and rng.random() < base["cvc"] * scale:
            keep.add(_choice(rng, ("cvc_rij", "cvc_lsc", "picc"), (0.55, 0.2, 0.25)))
        self.devices = keep

    def step_pneumothorax(self, setting: str, first: bool, new_line: bool) -> None:
        rng = self.rng
        forced = self._forced("pneumothorax")
        if forced is not None:
            if not forced:
                self.ptx_side, self.ptx_size = "", 0
            elif not self.ptx_side:
                self.ptx_side = "right" if rng.random() < 0.5 else "left"
                self.ptx_size = 1 + int(rng.choice(3, p=(0.58, 0.3, 0.12)))
            return
        if self.ptx_side and not first:
            r = rng.random()
            if r < 0.45:
                self.ptx_side, self.ptx_size = "", 0
                self.devices = {d for d in self.devices if not d.startswith("chest_tube")}
            elif r < 0.8:
                self.ptx_size = max(1, self.ptx_size - 1)
            return
        p = {"outpatient": 0.012, "ward": 0.035, "icu": 0.075}[setting] + 0.05 * new_line
        if rng.random() < p:
            self.ptx_side = "right" if rng.random() < 0.5 else "left"
            self.ptx_size = 1 + int(rng.choice(3, p=(0.58, 0.3, 0.12)))
            if setting != "outpatient" and rng.random() < (0.3 + 0.2 * self.ptx_size) * self.cfg.device_rate:
                self.devices.add(f"chest_tube_{self.ptx_side}")

    def step_consolidation(self, setting: str, first: bool) -> None:
        rng = self.rng
        forced = self._forced("consolidation")
        if forced is not None:
            if not forced:
                self.cons_lobe, self.cons_pattern = "", ""
            elif not self.cons_lobe:
                self.cons_lobe = _choice(rng, LOBES, _LOBE_P)
                self.cons_pattern = "lobar" if rng.random() < 0.45 else "patchy"
            return
        if self.cons_lobe and not first:
            if rng.random() < 0.45:
                self.cons_lobe, self.cons_pattern = "", ""
            return
        p = {"outpatient": 0.05, "ward": 0.13, "icu": 0.2}[setting] * (1.0 if first else 0.6)
        if rng.random() < p:
            self.cons_lobe = _choice(rng, LOBES, _LOBE_P)
            self.cons_pattern = "lobar" if rng.random() < 0.45 else "patchy"

    def step_atelectasis(self, setting: str, first: bool) -> None:
        rng = self.rng
        forced = self._forced("atelectasis")
        if forced is not None:
            self.atel = (self.atel or _choice(rng, _ATEL_KINDS, _ATEL_P)) if forced else ""
            return
        if self.atel and not first and rng.random() < 0.5:
            return
        big_eff = max(self.eff.values()) >= 2
        p = 0.08 + 0.1 * (setting == "icu") + 0.05 * (setting == "ward") + 0.2 * big_eff + 0.04 * (self.age > 70)
        p += 0.06 * ("ett" in self.devices)
        self.atel = _choice(rng, _ATEL_KINDS, _ATEL_P) if rng.random() < p else ""

    def findings(self, ctr: float, nodule: Nodule | None) -> Findings:
        r, lft = self.eff["right"], self.eff["left"]
        if r and lft:
            side, size = "bilateral", _SIZES[max(r, lft) - 1]
        elif r or lft:
            side, size = ("right", _SIZES[r - 1]) if r else ("left", _SIZES[lft - 1])
        else:
            side, size = "", ""
        return Findings(
            edema_severity=self.edema,
            ctr=ctr,
            effusion_side=side,
            effusion_size=size,
            pneumothorax_side=self.ptx_side,
            pneumothorax_size=_SIZES[self.ptx_size - 1] if self.ptx_side else "",
            consolidation_lobe=self.cons_lobe,
            consolidation_pattern=self.cons_pattern,
            atelectasis_kind=self.atel,
            nodule=nodule,
            devices=tuple(sorted(self.devices)),
        )


def _views(rng: np.random.Generator, setting: str, cfg: SynthConfig) -> tuple[str, ...]:
    p_pa = {"outpatient": 0.94, "ward": 0.45, "icu": 0.03}[setting]
    if rng.random() < p_pa:
        return ("PA", "LATERAL") if rng.random() < cfg.lateral_view_rate else ("PA",)
    return ("AP", "AP") if rng.random() < cfg.repeat_frontal_rate else ("AP",)


def sample_patient(seed: int, number: int, cfg: SynthConfig) -> PatientPlan:
    """Draw patient ``number`` of the corpus with ``seed``: anatomy and all studies."""
    rng = np.random.default_rng([seed, number, STREAM_COHORT])
    age = int(np.clip(rng.normal(62, 17), 18, 95))
    female = bool(rng.random() < 0.48)
    setting = _choice(rng, SETTINGS, (0.45, 0.33, 0.22))
    p_hf = 0.05 + 0.14 * (age > 65) + {"outpatient": 0.0, "ward": 0.14, "icu": 0.16}[setting]
    hf = bool(rng.random() < p_hf)
    forced_enlarged, forced_nodule = cfg.finding_rate("cardiomegaly"), cfg.finding_rate("nodule")
    p_enlarged = 0.78 if hf else 0.05 + 0.05 * (age > 70)
    enlarged = rng.random() < (p_enlarged if forced_enlarged is None else forced_enlarged)
    ctr = _ctr(rng, enlarged)
    nodule = None
    if rng.random() < (0.055 + 0.02 * (age > 60) if forced_nodule is None else forced_nodule):
        nodule = Nodule(side="right" if rng.random() < 0.55 else "left", lateral=float(rng.uniform(-0.4, 0.85)),
                        vertical=float(rng.uniform(-0.85, 0.55)), diameter_mm=float(np.round(rng.uniform(9, 28), 0)))
    lam = {"outpatient": 0.45, "ward": 1.2, "icu": 2.1}[setting] * (cfg.mean_studies_per_patient - 1.0) / 1.06
    n_studies = int(min(1 + rng.poisson(lam), cfg.max_studies_per_patient))
    course = _Course(rng, hf, age, cfg)
    if hf and rng.random() < 0.15 * cfg.device_rate or rng.random() < 0.015 * cfg.device_rate:
        course.devices.add("pacemaker")
    studies = []
    pid = f"p{number:06d}"
    for k in range(n_studies):
        first = k == 0
        if not first:  # patients leave intensive care over time
            if setting == "icu" and rng.random() < 0.3:
                setting = "ward"
            elif setting == "ward" and rng.random() < 0.2:
                setting = "outpatient"
        had_line = bool(course.devices & {"cvc_rij", "cvc_lsc", "picc"})
        course.step_devices(setting, first)
        new_line = bool(course.devices & {"cvc_rij", "cvc_lsc", "picc"}) and not had_line
        course.step_edema(setting, first)
        course.step_effusion(setting, first)
        course.step_pneumothorax(setting, first, new_line)
        course.step_consolidation(setting, first)
        course.step_atelectasis(setting, first)
        ctr_k = ctr if not (hf and course.edema >= 2 and ctr > 0.5) else round(min(ctr + 0.015, 0.75), 3)
        days = None if first else int({"icu": rng.integers(1, 4), "ward": rng.integers(1, 8),
                                       "outpatient": rng.integers(30, 700)}[setting])
        studies.append(StudyPlan(k, f"s{number:06d}_{k:02d}", course.findings(ctr_k, nodule),
                                 _views(rng, setting, cfg), setting, days))
    anatomy = sample_anatomy(np.random.default_rng([seed, number, STREAM_ANATOMY]), cfg.anatomy_variation, female,
                             body_scale=cfg.body_scale, chest_aspect=cfg.chest_aspect, heart_scale=cfg.heart_scale)
    return PatientPlan(number, pid, age, female, hf, anatomy, tuple(studies))


__all__ = ["StudyPlan", "PatientPlan", "sample_patient", "SETTINGS", "STREAM_COHORT", "STREAM_ANATOMY",
           "STREAM_REPORT", "STREAM_SPLIT"]
