"""The ``asmr`` command: one parser over the library's and the applications' subcommands.

Each module in ``COMMAND_MODULES`` exposes ``add_commands(subparsers)`` and sets ``func``
on its parsers; errors a user can fix are printed as ``asmr COMMAND: error: ...`` with
exit status 2. Nothing imports this module; it sits above everything it dispatches to.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("asmr_jax.cli", "asmr_jax.batch_cli", "meta.compress_cli", "meta.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asmr", description="ASMR / SIREN coordinate networks and functa-style meta-learning in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        print(f"asmr {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
