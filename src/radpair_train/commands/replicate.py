"""`radpair replicate`: run a seed paper's protocol and set its tables beside the published ones.

    radpair replicate --list                  # every paper, whether it runs today, what it would run
    radpair replicate radtex --show           # the paper's tables with the published numbers
    radpair replicate radtex --quick          # a smoke run (<= 5 minutes on 2 CPU cores)
    radpair replicate radtex                  # the cpu preset (<= 60 minutes)
    radpair replicate radtex --data DIR       # the paper's own settings on a real corpus

Papers are data files (``radpair/replicate/papers/<name>.yaml``); see docs/replicate.md.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replicate",
        help="reproduce a seed paper's protocol and tables (radpair replicate --list)",
        description="Pretrain the methods a paper compares, transfer them by its protocol, and write its tables "
        "with the published numbers beside the measured ones. Modes: --quick (a smoke run, <= 5 minutes), the "
        "default cpu preset (<= 60 minutes on 2 cores), or --data DIR (a real corpus, the paper's settings).",
    )
    p.add_argument("paper", nargs="?", help="paper name (see --list)")
    p.add_argument("--list", action="store_true", help="list every paper, its status and what it would run")
    p.add_argument("--show", action="store_true", help="print the paper's tables with the published numbers")
    p.add_argument("--quick", action="store_true", help="a smoke run with tiny presets (<= 5 minutes)")
    p.add_argument("--data", metavar="DIR", help="a real corpus folder (radpair preprocess); runs the paper's settings")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/replicate/PAPER[-quick])")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def mode_of(args: argparse.Namespace) -> str:
    """``quick`` with --quick (also on --data), ``data`` with --data, else ``cpu``."""
    if args.quick:
        return "quick"
    return "data" if args.data else "cpu"


def list_text(methods: set[str] | None = None, capabilities: set[str] | None = None) -> tuple[str, bool]:
    """The ``--list`` text, and False when a paper file did not load (it is listed as broken)."""
    import radpair.transfer  # noqa: F401 - registers what the transfer harness can run
    from radpair.errors import ConfigError
    from radpair.replicate import describe_plan, list_papers, load_paper, paper_status

    lines = []
    ok = True
    for name in list_papers():
        try:
            paper = load_paper(name)
        except ConfigError as exc:
            lines += [f"{name:<18} broken: {exc}", ""]
            ok = False
            continue
        status = paper_status(paper, methods=methods, capabilities=capabilities)
        info = paper.info
        first = info.authors[0].split()[-1] if info.authors else "?"
        lines.append(f"{name:<18} {status.summary()}")
        lines.append(f"{'':<18} {first} et al. {info.year}, {info.title} ({info.venue})")
        for step in describe_plan(paper, "cpu"):
            lines.append(f"{'':<18}   {step}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n", ok


def show_text(paper) -> str:
    from radpair.replicate import render_table

    info = paper.info
    parts = [f"# {paper.name}: {info.title}", "", f"{', '.join(info.authors)}. {info.venue}, {info.year}.", "",
             info.summary.strip(), ""]
    for t in paper.tables:
        parts += [render_table(paper, t.id), ""]
    if paper.claims:
        parts += ["Claims:"]
        for c in paper.claims:
            held = {True: "holds in the paper's numbers", False: "contradicted by the paper's own numbers",
                    None: "not decidable from the paper's numbers"}[c.holds_in_paper]
            parts.append(f"- {c.id}: {' '.join(c.text.split())} ({held})")
        parts.append("")
    if paper.deviations:
        parts += ["Deviations here:"]
        parts += [f"- {d.topic}: paper: {' '.join(d.paper.split())}; here: {' '.join(d.here.split())}"
                  for d in paper.deviations]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import radpair.transfer  # noqa: F401 - registers what the transfer harness can run

    from radpair.errors import ConfigError
    from radpair.replicate import load_paper, paper_status

    if args.list:
        if args.paper:
            raise ConfigError("--list takes no paper name")
        text, ok = list_text()
        sys.stdout.write(text)
        return 0 if ok else 2
    if not args.paper:
        raise ConfigError("name a paper; `radpair replicate --list` shows them")
    paper = load_paper(args.paper)
    if args.show:
        sys.stdout.write(show_text(paper))
        return 0
    if args.data and not Path(args.data).is_dir():
        raise ConfigError(f"--data {args.data!r} is not a folder")
    status = paper_status(paper)
    if not status.runnable:
        print(f"radpair replicate: {paper.name} cannot run yet; {status.summary()}", file=sys.stderr)
        return 2
    if status.skipped:
        print(f"radpair replicate: {paper.name}: {status.summary()}", file=sys.stderr)
    mode = mode_of(args)
    out = args.out or f"runs/replicate/{paper.name}" + ("-quick" if mode == "quick" else "")
    from radpair.replicate.runner import run_paper

    run_paper(paper, mode, args.data, out, progress=not args.no_progress, device=args.device)
    return 0
