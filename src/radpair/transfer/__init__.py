"""Few-label transfer: arms (start x protocol), label budgets, validation-only selection,
paired statistics. ``run_transfer`` is what ``radpair transfer`` and the demo call.

    from radpair.transfer import TransferConfig, run_transfer
    cfg = TransferConfig(task="findings7", encoders=["convirt=run/image_encoder.safetensors", "random"],
                         protocols=["linear", "finetune"], n=["10", "100", "all"], repeats=5)
    result = run_transfer(cfg, "demo_out/corpus", "transfer_out")
    result.paired_difference("convirt:linear", "random:finetune", "100")
"""

from radpair.replicate.registry import ISSUES, register_capability
from radpair.transfer.arms import Arm, Protocol, Start
from radpair.transfer.config import FinetuneSettings, FrozenHeadSettings, LinearSettings, TransferConfig
from radpair.transfer.results import CellResult, TransferResult
from radpair.transfer.subsets import Budget, SubsetManifest, parse_budgets

# What `radpair replicate` can rely on from this harness, and where the rest is built.
register_capability("transfer", "linear", "frozen_head", "finetune", "label_fractions", "ordinal_metrics",
                    "supervised_pretrained")
# the replicate runner scores a method's own classifier (radpair.evaluation.own_classifier)
register_capability("joint", "matching_metrics", "shifted_corpus")
# ... with the report as input where the method declares it (classifier_inputs), and the
# reports of its generative methods scored by radpair.evaluation.generation
register_capability("report_classification", "generation", "caption_metrics")
ISSUES.update({
    "chauhan_ranking": "issue 11", "convirt_sections": "issue 11", "timnet_matching": "issue 11",
    "joint": "issue 11", "matching_metrics": "issue 11", "shifted_corpus": "issue 11",
    "radtex_captioning": "issue 12", "tienet": "issue 12", "generation": "issue 12", "caption_metrics": "issue 12",
    "report_classification": "issue 12",
})


def run_transfer(*args, **kwargs):
    """See :func:`radpair.transfer.sweep.run_transfer` (imported on use: it pulls in torch)."""
    from radpair.transfer.sweep import run_transfer as _run

    return _run(*args, **kwargs)


__all__ = ["Arm", "Budget", "CellResult", "FinetuneSettings", "FrozenHeadSettings", "LinearSettings", "Protocol",
           "Start", "SubsetManifest", "TransferConfig", "TransferResult", "parse_budgets", "run_transfer"]
