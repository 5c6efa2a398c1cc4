"""Training objectives, written to be correct across processes."""

from radpair.objectives.contrastive import ContrastiveLoss, bidirectional_info_nce, gather_with_grad

__all__ = ["ContrastiveLoss", "bidirectional_info_nce", "gather_with_grad"]
