"""Running a paper's protocol end to end.

The registry holds every paper's protocol as data; a paper runs when radpair has the
methods and capabilities its file requires (``radpair replicate --list``). Today the
transfer harness provides the downstream half (tasks, arms, budgets, paired statistics)
and no paper's own pretraining method exists yet: those arrive with the method issues
(joint-embedding methods in issue 11, generative methods in issue 12), which also connect
this runner to them. Until then every paper stops here with what it still needs.
"""

from __future__ import annotations

from pathlib import Path

from radpair.errors import ConfigError
from radpair.replicate.schema import Paper


def run_paper(paper: Paper, mode: str, data: str | Path | None, out: str | Path, progress: bool = True,
              device: str = "cpu") -> Path:
    """Pretrain the paper's methods, run its transfer arms and write its tables beside the
    published numbers under ``out``; ``mode`` is ``quick``, ``cpu`` or ``data``."""
    from radpair.replicate.registry import paper_status

    status = paper_status(paper)
    if not status.runnable:
        raise ConfigError(f"{paper.name} cannot run yet; {status.summary()}")
    raise ConfigError(f"{paper.name}: its methods are registered, but the runner that pretrains them and "
                      "fills its tables is built with those methods (issues 11 and 12)")
