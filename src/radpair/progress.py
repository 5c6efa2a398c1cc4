"""One look for every counted progress bar (synthesis, cache building): rich, on stderr.

rich is imported when a bar is made, so importing radpair stays cheap.
"""

from __future__ import annotations


def count_progress(label: str, unit: str = "images", enabled: bool = True, transient: bool = False):
    """A ``rich.progress.Progress`` showing ``label``, a bar, done/total ``unit``, elapsed and ETA.

    ``label`` may contain rich markup and ``{task.description}``.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=transient,
        console=Console(stderr=True),
    )
