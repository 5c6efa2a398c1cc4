"""`radpair sections`: split reports into canonical sections, one row per report.

    radpair sections reports.csv -o sections.csv
    radpair sections mimic-cxr-reports/files/ -o mimic_cxr_sectioned.csv --policy findings+impression
    radpair sections indiana_reports.csv --id-column uid --text-column findings,impression -o iu.csv

INPUT is a CSV (``--text-column``, default ``report``; several columns comma-separated
become ``NAME: text`` sections; ``--id-column``, default ``id`` or the row number) or a
folder of ``.txt`` reports (searched recursively; the id is the path without ``.txt``).
The output has the id column, ``layout``, one column per canonical section
(indication ... untitled), ``last_paragraph``, and ``selected_<policy>`` per ``--policy``.
Unreadable inputs are listed on standard error and keep their row with empty sections.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    from radpair.reports import LAYOUTS, SECTION_POLICIES

    p = sub.add_parser(
        "sections",
        help="split radiology reports into canonical sections (findings, impression, ...)",
        description="Split free-text radiology reports into canonical sections (MIMIC-CXR layout, "
        "generic text) and optionally add the text a selection policy reads.",
    )
    p.add_argument("input", help="CSV/TSV file, a .txt report, or a folder of .txt reports")
    p.add_argument("-o", "--output", required=True, help="output CSV ('-' for standard output)")
    p.add_argument("--text-column", default="report", help="CSV column(s) with the report text (default: report)")
    p.add_argument("--id-column", default=None, help="CSV id column (default: 'id', else the row number)")
    p.add_argument("--layout", default="auto", choices=list(LAYOUTS), help="report layout (default: auto)")
    p.add_argument("--policy", action="append", default=[], metavar="POLICY",
                   help=f"add a selected_<POLICY> column; repeatable ({', '.join(SECTION_POLICIES)})")
    p.add_argument("--clean", action="store_true", help="collapse whitespace inside each section")
    p.add_argument("--deid", action="store_true", help="replace ___/XXXX de-identification masks by one token")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when an input could not be read")
    p.set_defaults(func=run)


def report_problems(command: str, inputs, stream=None, limit: int = 20) -> None:
    """Print notes and unreadable inputs (with reasons) on standard error."""
    stream = stream or sys.stderr
    for note in inputs.notes:
        print(f"radpair {command}: note: {note}", file=stream)
    if inputs.problems:
        print(f"radpair {command}: {len(inputs.problems)} input problem(s):", file=stream)
        for where, why in inputs.problems[:limit]:
            print(f"  {where}: {why}", file=stream)
        if len(inputs.problems) > limit:
            print(f"  ... and {len(inputs.problems) - limit} more", file=stream)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from radpair.reports import get_policy, normalise_deid, parse_report
    from radpair.reports.inputs import read_report_inputs, write_table
    from radpair.reports.report import PARSED_SECTIONS, SectionName
    from radpair.reports.selection import select_from_report

    policies = [get_policy(p).name for p in args.policy]  # unknown names fail before reading
    t0 = time.perf_counter()
    inputs = read_report_inputs(args.input, args.text_column, args.id_column)
    names = [s.value for s in PARSED_SECTIONS] + [SectionName.LAST_PARAGRAPH.value]

    def tidy(text: str | None) -> str:
        if not text:
            return ""
        if args.clean:
            text = " ".join(text.split())
        return normalise_deid(text) if args.deid else text

    rows = []
    for rid, text in zip(inputs.ids, inputs.texts):
        row = {inputs.id_column: rid}
        if text is None:
            row["layout"] = ""
            row.update({n: "" for n in names})
            row.update({f"selected_{p}": "" for p in policies})
        else:
            report = parse_report(text, args.layout)
            row["layout"] = report.layout
            row.update({n: tidy(report.section(n)) for n in names})
            row.update({f"selected_{p}": select_from_report(report, p, clean=True, deid=args.deid) for p in policies})
        rows.append(row)
    columns = [inputs.id_column, "layout", *names, *(f"selected_{p}" for p in policies)]
    write_table(pd.DataFrame(rows, columns=columns), args.output)
    report_problems("sections", inputs)
    dt = time.perf_counter() - t0
    if args.output != "-":
        print(f"sectioned {len(inputs)} reports in {dt:.1f} s -> {args.output}", file=sys.stderr)
    return 1 if (args.strict and inputs.problems) else 0
