"""Explanations of what a trained model looked at, for every method that offers them:
Grad-CAM on the image branch, the [CLS] token's attention over a report, a decoder's
attention per generated word, image-sentence similarity maps, and a t-SNE of embeddings.

Which explanation a model gets follows from what it offers (a classifier, a joint space,
a BERT text encoder, a report decoder), never from its method's name, so a new method is
explained as soon as it exists. ``docs/explanations.md`` says where the maps can be trusted.
"""

from radpair.explain.api import ExplainItem, ExplainResult, explain_run
from radpair.explain.maps import MIN_CELLS, choose_layer, cls_attention, gradcam, greedy_reports, similarity_maps
from radpair.explain.subject import Subject, load_subject

__all__ = ["explain_run", "ExplainResult", "ExplainItem", "load_subject", "Subject", "choose_layer", "gradcam",
           "cls_attention", "greedy_reports", "similarity_maps", "MIN_CELLS"]
