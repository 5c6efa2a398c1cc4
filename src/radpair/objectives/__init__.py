"""Training objectives, written to be correct across processes."""

from radpair.objectives.contrastive import ContrastiveLoss, bidirectional_info_nce, gather_with_grad
from radpair.objectives.false_negatives import (
    RowCodes,
    false_negative_mask,
    gather_codes,
    impostor_false_negatives,
    masked_info_nce,
)
from radpair.objectives.matching import (
    MatchingLoss,
    MatchingMetrics,
    MatchingPairs,
    match_features,
    matching_loss,
    matching_metrics,
    matching_pairs,
)
from radpair.objectives.ranking import (
    ClassifierLoss,
    DirectLoss,
    RankingLoss,
    constrained_permutation,
    direct_similarity_loss,
    impostor_permutation,
    labelled_cross_entropy,
    pair_similarity,
    ranking_hinge,
    ranking_loss,
    ranking_margin,
)
from radpair.objectives.sections import SectionLoss, section_local_loss, section_study_loss

__all__ = [
    "ClassifierLoss",
    "ContrastiveLoss",
    "DirectLoss",
    "MatchingLoss",
    "MatchingMetrics",
    "MatchingPairs",
    "RankingLoss",
    "RowCodes",
    "SectionLoss",
    "bidirectional_info_nce",
    "constrained_permutation",
    "direct_similarity_loss",
    "false_negative_mask",
    "gather_codes",
    "gather_with_grad",
    "impostor_false_negatives",
    "impostor_permutation",
    "labelled_cross_entropy",
    "masked_info_nce",
    "match_features",
    "matching_loss",
    "matching_metrics",
    "matching_pairs",
    "pair_similarity",
    "ranking_hinge",
    "ranking_loss",
    "ranking_margin",
    "section_local_loss",
    "section_study_loss",
]
