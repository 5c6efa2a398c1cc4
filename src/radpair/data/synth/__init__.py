"""Synthetic chest radiograph-report corpus: the development stand-in for MIMIC-CXR.

Real paired data needs credentials, so radpair is developed and tested on a generated
corpus whose images carry real radiographic signs (cephalization, Kerley lines,
menisci, pleural lines, air bronchograms...) and whose reports are written like a
radiologist's, with realistic co-occurrence, class imbalance, follow-ups, devices,
distractors and a measured amount of report error.

Public API::

    from radpair.data.synth import SynthConfig, generate_corpus, FINDINGS
    corpus = generate_corpus(out_dir, n_images=2000, size=128, seed=0, workers=2, config=SynthConfig())

Lower level, for tests and figures: :func:`render_image` draws one image with explicit
:class:`Findings` on an :class:`Anatomy` (:func:`render_image_with_masks` also returns
where each finding was drawn); :func:`write_report` writes one report.

Module map: ``config`` (knobs), ``findings`` (truth of a study), ``anatomy`` (patient
geometry), ``cohort`` (patients/studies/co-occurrence), ``raster`` (drawing
primitives), ``render`` (the image), ``overlays`` (devices, leads, markers, text),
``reports`` (the text), ``agreement`` (text vs truth), ``shortcuts`` (what travels with a
finding: ECG leads / tubing rates), ``masks`` (ground-truth regions: recorded while drawing,
stored beside the corpus, read with ``Corpus.masks``), ``generate`` (orchestration).
"""

from radpair.data.synth.agreement import measure_agreement
from radpair.data.synth.anatomy import Acquisition, Anatomy, sample_anatomy
from radpair.data.synth.cohort import PatientPlan, StudyPlan, sample_patient
from radpair.data.synth.config import DIFFICULTIES, SynthConfig, load_synth_config
from radpair.data.synth.findings import FINDINGS, Findings, Nodule
from radpair.data.synth.generate import generate_corpus
from radpair.data.synth.masks import CorpusMasks
from radpair.data.synth.render import MAX_SIZE, MIN_SIZE, render_image, render_image_with_masks
from radpair.data.synth.reports import Report, write_report

__all__ = [
    "FINDINGS",
    "SynthConfig",
    "generate_corpus",
    "load_synth_config",
    "DIFFICULTIES",
    "Findings",
    "Nodule",
    "Anatomy",
    "Acquisition",
    "sample_anatomy",
    "render_image",
    "render_image_with_masks",
    "CorpusMasks",
    "MIN_SIZE",
    "MAX_SIZE",
    "PatientPlan",
    "StudyPlan",
    "sample_patient",
    "Report",
    "write_report",
    "measure_agreement",
]
