"""`radpair probe`: an alias of `radpair transfer --protocol linear` (same flags).

Kept so that existing scripts keep working; everything it does is the transfer harness's
linear protocol, with validation-only selection and paired statistics.
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
    p.set_defaults(func=run, list_tasks=False)


def run(args: argparse.Namespace) -> int:
    from radpair.errors import ConfigError
    from radpair_train.commands import transfer

    if args.protocol not in ("linear", None):
        raise ConfigError("radpair probe runs the linear protocol only; use radpair transfer --protocol ...")
    args.protocol = "linear"
    return transfer.run(args)
