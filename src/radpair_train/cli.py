"""The ``radpair`` command. Each subcommand lives in its own module under
:mod:`radpair_train.commands` and exposes ``register(subparsers)``; modules are imported
lazily by name so ``radpair --help`` stays fast and one broken optional dependency does
not take down unrelated subcommands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# OpenMP threads that busy-wait between parallel regions steal the core from every other
# process; on a shared 2-core machine that made a training step 5.8x slower
# (benchmarks/engine_omp_wait.py). Set before torch is first imported; users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from radpair.errors import ConfigError, DataError

# module name under radpair_train.commands, in the order --help lists them
COMMANDS = [
    "demo",
    "synth",
    "tokenizer",
    "word_vectors",
    "pretrain",
    "transfer",
    "probe",
    "evaluate",
    "generate",
    "replicate",
    "sections",
    "label",
    "preprocess",
    "export",
    "predict",
    "explain",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radpair",
        description="Learn chest-radiograph encoders from radiology reports; transfer them with few labels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"radpair_train.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"radpair_train.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except (ConfigError, DataError) as exc:
        print(f"radpair {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
