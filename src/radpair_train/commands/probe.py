"""`radpair probe`: an alias of `radpair transfer --protocol linear` (same flags).

Kept so that existing scripts keep working: the old ``--labels`` and ``--label-source``
flags still name label columns directly (a multi-label task over every view); everything
else is the transfer harness's linear protocol, with validation-only selection and paired
statistics.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from radpair_train.commands.transfer import add_transfer_arguments

    p = sub.add_parser(
        "probe",
        help="alias of `radpair transfer --protocol linear`: linear probes of frozen encoders at N labels",
        description="Linear probes of frozen encoders; the same as `radpair transfer --protocol linear`.",
    )
    add_transfer_arguments(p)
    p.add_argument("--labels", default=None,
                   help="comma-separated label columns (instead of --task): a multi-label task on every view")
    p.add_argument("--label-source", default="ground_truth", choices=["ground_truth", "index"],
                   help="with --labels: where training and test labels come from (default: ground_truth)")
    p.set_defaults(func=run, list_tasks=False)


def run(args: argparse.Namespace) -> int:
    from radpair.errors import ConfigError
    from radpair.tasks import TaskSpec
    from radpair_train.commands import transfer

    if args.protocol not in ("linear", None) or any(not a.endswith(":linear") for a in args.arm):
        raise ConfigError("radpair probe runs the linear protocol only; use radpair transfer for other protocols")
    args.protocol = "linear"
    task = None
    if args.labels:
        if args.task:
            raise ConfigError("give --task or --labels, not both")
        source = "truth" if args.label_source == "ground_truth" else "index"
        columns = [c.strip() for c in args.labels.split(",") if c.strip()]
        task = TaskSpec(name="probe_labels", description=f"label columns {columns} ({args.label_source})",
                        schema="multilabel", columns=columns, train_labels=source, test_labels=source)
        task.validate()
        if args.views is None:
            args.views = "all"
    return transfer.run(args, task=task)
