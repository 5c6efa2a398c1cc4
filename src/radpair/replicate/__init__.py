"""``radpair replicate``: the seed papers' protocols, kept as data.

Each paper is one YAML file in ``radpair/replicate/papers``: its methods with the paper's
settings and cpu presets, its downstream protocols, the tables we reproduce with the
published numbers, the claims they decide, the deviations here and what it requires.

    >>> from radpair.replicate import list_papers, load_paper, render_table
    >>> paper = load_paper("radtex")
    >>> print(render_table(paper, "table1"))      # published numbers, "not run" beside them

Nothing here imports torch except :func:`paper_status` without an explicit method list.
"""

from radpair.replicate.registry import (
    CAPABILITIES,
    ISSUES,
    PAPERS_DIR,
    PaperStatus,
    describe_plan,
    list_papers,
    load_all,
    load_paper,
    paper_status,
    paper_text_path,
    register_capability,
    registered_methods,
)
from radpair.replicate.schema import (
    Arm,
    Budgets,
    Claim,
    CorpusSpec,
    Deviation,
    EvalSet,
    Evaluation,
    Expectation,
    MethodSpec,
    Paper,
    PaperFileError,
    PaperInfo,
    Protocol,
    Requirements,
    TableLine,
    TableSpec,
    load_paper_file,
)
from radpair.replicate.tables import (
    ClaimResult,
    Comparison,
    check_published_claims,
    evaluate_claim,
    evaluate_claims,
    format_measured,
    published_values,
    render_table,
)

__all__ = [
    "Arm",
    "Budgets",
    "CAPABILITIES",
    "check_published_claims",
    "Claim",
    "ClaimResult",
    "Comparison",
    "CorpusSpec",
    "describe_plan",
    "Deviation",
    "EvalSet",
    "evaluate_claim",
    "evaluate_claims",
    "Evaluation",
    "Expectation",
    "format_measured",
    "ISSUES",
    "list_papers",
    "load_all",
    "load_paper",
    "load_paper_file",
    "MethodSpec",
    "Paper",
    "paper_status",
    "paper_text_path",
    "PaperFileError",
    "PaperInfo",
    "PAPERS_DIR",
    "PaperStatus",
    "Protocol",
    "published_values",
    "register_capability",
    "registered_methods",
    "render_table",
    "Requirements",
    "TableLine",
    "TableSpec",
]
