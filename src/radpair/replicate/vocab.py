"""The closed vocabularies a paper file may use.

A paper file names methods, tasks, metrics, protocols and capabilities by string; each
string must come from one of the tables below, so a typo fails when the file is loaded
(with the closest valid name) instead of when a run reaches that arm an hour later.

Nothing here imports torch: ``radpair replicate --list`` and the tests read these tables
without building a model.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

# Pretraining methods a paper may name: those registered in radpair.methods.METHODS
# today plus the ones the seed papers need. paper_status() asks the live registry which
# of them exist; this table only catches typos and says what each one is.
PLANNED_METHODS: Mapping[str, str] = MappingProxyType({
    "convirt": "ConVIRT: image + report encoders, bidirectional InfoNCE (Zhang et al.)",
    "supervised": "image encoder + linear head trained on labels (from scratch, or on another labelled corpus)",
    "chauhan_ranking": "Chauhan et al. 2020 joint model: ranking loss with impostor pairs (Eq. 1; similarity dot, "
                       "l2 or cosine; criterion ranking or direct), plus the image/text classifiers of Eq. 3",
    "convirt_sections": "modified ConVIRT: FINDINGS and IMPRESSION through separate text branches, averaged, "
                        "with a findings<->impression local loss",
    "timnet_matching": "TIMNet: |image - text| embedding difference fed to a match/no-match classifier",
    "radtex_captioning": "RadTex / VirTex: ResNet + transformer decoder, bidirectional captioning of FINDINGS",
    "tienet": "TieNet: CNN-RNN report generator with attention-encoded text embedding (AETE) and saliency-"
              "weighted pooling (SW-GAP), joint classification + generation loss",
})

# Capabilities of the replicate harness beyond the methods. The harness adds a name to
# radpair.replicate.registry.CAPABILITIES once it supports it.
CAPABILITY_NAMES: Mapping[str, str] = MappingProxyType({
    "transfer": "the replicate harness itself: corpora, pretraining runs, arms x budgets x repeats, tables",
    "linear": "protocol 'linear': logistic-regression probe on frozen, cached encoder features",
    "frozen_head": "protocol 'frozen-head': frozen encoder, a head (linear or TIMNet shallow CNN) trained by SGD/Adam",
    "finetune": "protocol 'finetune': encoder and head trained end to end",
    "joint": "protocol 'joint': no separate transfer; the method's own image classifier, trained with the "
             "method on the labelled subset (Chauhan Eq. 3, TieNet I+GR), is evaluated",
    "label_fractions": "budgets given as fractions of the labelled training set (TIMNet's 0.5 %..100 %)",
    "ordinal_metrics": "the dichotomised AUCs of an ordinal 0-3 task (auc_0|123, auc_01|23, auc_012|3)",
    "matching_metrics": "accuracy/AUC/F1/precision/recall/AP of a text-image matching head on held-out pairs",
    "generation": "decoding reports from images (greedy or beam search)",
    "caption_metrics": "BLEU-1..4, METEOR and ROUGE-L of generated against written reports",
    "report_classification": "classifiers that read the report (TieNet R and I+R auto-annotation)",
    "shifted_corpus": "a second synthetic corpus with shifted generator settings (other-institution stand-in)",
    "supervised_pretrained": "supervised pretraining on another labelled corpus, transferred like a pretrained "
                             "encoder (RadTex's CXR14-pretrained arm)",
})

# Downstream tasks. ``classes`` are the label columns (or levels) the task scores.
SYNTH_FINDINGS = ("edema", "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "atelectasis",
                  "nodule")
TASKS: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "findings7": {"kind": "multilabel", "classes": SYNTH_FINDINGS,
                  "description": "7 binary synthetic findings (multi-label, or one binary model per finding)"},
    "edema_severity": {"kind": "ordinal", "classes": ("0", "1", "2", "3"),
                       "description": "pulmonary edema severity 0 none, 1 vascular congestion, 2 interstitial, "
                                      "3 alveolar (4 ordinal classes)"},
    "abnormal": {"kind": "binary", "classes": ("abnormal",),
                 "description": "any of the 7 findings present (binary); its complement is 'no finding'"},
    "chexpert8": {"kind": "multilabel",
                  "classes": ("atelectasis", "cardiomegaly", "edema", "pleural_effusion", "consolidation",
                              "pneumothorax", "no_finding"),
                  "description": "CheXpert-8 stand-in: the 8 observations of the ConVIRT section study with "
                                 "consolidation for pneumonia and no fracture (7 columns)"},
    "consolidation": {"kind": "binary", "classes": ("consolidation",),
                      "description": "consolidation present (binary): the stand-in for pneumonia"},
})

# Metric names. Per-class cells select a class with ``class:``; the mean over classes is
# ``class: mean`` (the default for multi-class tasks) and ``weighted_mean`` weights by positives.
METRICS: Mapping[str, str] = MappingProxyType({
    "auc": "ROC AUC (binary; mean over classes for multi-label)",
    "aucpr": "area under the precision-recall curve (average precision)",
    "ap": "average precision (TIMNet's name for aucpr)",
    "macro_f1": "F1 averaged over classes (argmax prediction for multi-class)",
    "f1": "F1 of the positive class at threshold 0.5 (binary)",
    "accuracy": "accuracy at threshold 0.5 (argmax for multi-class)",
    "precision": "precision of the positive class at threshold 0.5",
    "recall": "recall of the positive class at threshold 0.5",
    "auc_0|123": "edema: AUC of severity 0 vs 1,2,3 (P = p1 + p2 + p3)",
    "auc_01|23": "edema: AUC of severity 0,1 vs 2,3",
    "auc_012|3": "edema: AUC of severity 0,1,2 vs 3",
    "positives": "number of positive test cases (the '#' columns of TieNet Table 1)",
    "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4",
    "meteor": "METEOR", "rouge_l": "ROUGE-L",
    "ce_f1": "clinical efficacy: micro F1 of the CheXpert labeler's positive findings, generated against written "
             "reports (uncertain read as positive, all 14 observations)",
})
ORDINAL_METRICS = frozenset({"auc_0|123", "auc_01|23", "auc_012|3"})
CAPTION_METRICS = frozenset({"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "ce_f1"})
CLASS_AGGREGATES = ("mean", "weighted_mean")

PROTOCOLS = ("linear", "frozen-head", "finetune", "joint")
PROTOCOL_CAPABILITY = MappingProxyType({"linear": "linear", "frozen-head": "frozen_head", "finetune": "finetune",
                                        "joint": "joint"})
HEADS = ("linear", "timnet")
INPUTS = ("image", "report", "image+report")
# starts that are not one of the paper's method ids
SPECIAL_STARTS = ("random", "supervised-pretrained")
EVALUATION_KINDS = ("matching", "generation")
EVALUATION_CAPABILITIES = MappingProxyType({"matching": ("matching_metrics",),
                                            "generation": ("generation", "caption_metrics")})
# Where labels come from (the names of radpair.tasks): ``report``: radpair's rule labelers
# run on the report text (the papers' CheXpert / NegBio / regex labels, with their errors);
# ``index``: the corpus index's own label columns (for the synthetic corpus, what each
# report states, as a person reading the report labels it: TieNet's hand-labelled set,
# Chauhan's expert-corrected report labels); ``truth``: the image's drawn truth, as a
# radiologist reading the image labels it (RadTex's consensus set, CheXpert's validation
# set, Mendeley's graded images).
LABEL_SOURCES = ("truth", "index", "report")
CORPUS_ROLES = ("main", "shifted", "supervised_source")

# image encoders of radpair.models.image_encoders usable in the cpu and quick presets
BACKBONES = ("resnet_tiny", "resnet_small", "resnet18", "resnet34", "resnet50")
# keys of a synthetic corpus preset (n, size, seed, difficulty) and SynthConfig knobs
CORPUS_PRESET_KEYS = ("n", "size", "seed", "difficulty", "synth")
DIFFICULTIES = ("easy", "classic", "default", "hard", "pediatric_shift")
SYNTH_KNOBS = ("conspicuity", "noise", "anatomy_variation", "distractor_rate", "distractor_illness_link",
               "heart_size_confounding", "report_noise", "lateral_view_rate",
               "repeat_frontal_rate", "mean_studies_per_patient", "max_studies_per_patient",
               "paragraph_report_rate", "line_wrap_rate", "split_fractions",
               "body_scale", "chest_aspect", "heart_scale", "exposure_gamma", "exposure_contrast",
               "exposure_brightness", "noise_grain", "device_rate", "findings_only", "finding_prevalence")

MODES = ("quick", "cpu", "data")

# keys of a method's paper / cpu / quick settings (null in ``paper`` = not stated in the paper)
METHOD_SETTING_KEYS = (
    "backbone", "backbone_init", "image_size", "epochs", "max_steps", "batch_size", "lr", "optimizer", "schedule",
    "warmup", "weight_decay", "grad_clip", "text_sections", "text_encoder", "max_length", "embedding_dim",
    "projection_dim", "temperature", "augmentation", "pairs", "labelled_epochs", "gpus", "lr_scale",
    "lookahead_steps", "method_options", "choose_on_validate", "vocabulary", "word_vectors",
)
# ``vocabulary``: the tokenizer every method of the paper reads (one per paper, trained on
# the main corpus's training reports); ``kind`` wordpiece (subword pieces, the default) or
# word (every word seen ``min_count`` times, [UNK] for the rest: TieNet's), ``size`` a cap
# (special tokens included; default 3000 for wordpiece, none for word)
TOKENIZER_KINDS = ("wordpiece", "word")
VOCABULARY_KEYS = ("kind", "size", "min_count")
# ``word_vectors``: word2vec trained on the training reports, aligned to the tokenizer, as
# the start of the method's word embedding (``dim`` must equal its word_dim; default: it)
WORD_VECTOR_KEYS = ("dim", "seed", "epochs", "window")
# keys of a transfer protocol's / arm's downstream hyper-parameters
HYPER_KEYS = (
    "optimizer", "lr", "schedule", "warmup", "weight_decay", "epochs", "max_steps", "batch_size", "loss",
    "augmentation", "early_stopping", "per_class_models", "input_channels", "image_size", "backbone",
)
# extra keys a protocol's cpu / quick override may set besides HYPER_KEYS
RUN_KEYS = ("repeats", "budgets", "labelled_fraction")
# machine-readable values of the optimiser / schedule / loss keys (details go in YAML comments)
OPTIMIZERS = ("adam", "adamw", "sgd", "sgd-lookahead")
SCHEDULES = ("constant", "cosine", "linear", "warmup-linear", "warmup-cosine", "reduce-on-plateau")
LOSSES = ("cross_entropy", "binary_cross_entropy")
