"""The ``asmr`` command: one parser over every subcommand, one module per group.

    signal      asmr fit, asmr render            one signal, one network
    batch       asmr fit-many                    one network per image of a dataset
    codec       asmr codec-fit, encode, decode   image files <-> compressed latent files
    metalearn   asmr meta-train, meta-encode, meta-decode

Each group module exposes ``add_commands(subparsers)`` and sets ``func`` on its parsers;
building the parser imports no JAX (the commands import what they run). Errors a user
can fix are printed as ``asmr COMMAND: error: ...`` with exit status 2. Nothing in the
library or in ``meta`` imports this package; it sits above everything it dispatches to.
"""

from __future__ import annotations

import argparse
import sys

from meta.commands import batch, codec, metalearn, signal

GROUPS = (signal, batch, codec, metalearn)


class OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, ``asmr COMMAND: error: ...`` (exit 2), like
    every other refusal of the command; ``--help`` still prints the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        for action in self._actions:  # an int flag past int32 would overflow a shape or a counter later
            values = getattr(ns, action.dest, None)
            for value in values if isinstance(values, list) else [values]:
                if (action.type is int and isinstance(value, int) and action.option_strings
                        and not -(2**31) <= value < 2**31):
                    self.error(f"argument {action.option_strings[0]}: {value} is out of range (|value| < 2^31)")
        return ns, rest


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="asmr", description="ASMR / SIREN coordinate networks and functa-style meta-learning in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            FloatingPointError, MemoryError) as e:
        # one line: a message that spans several (orbax, XLA) is folded
        print(f"asmr {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except Exception as e:  # XLA's out-of-memory is the user's to fix too; anything else is a bug
        if type(e).__name__ not in ("XlaRuntimeError", "JaxRuntimeError") or "RESOURCE_EXHAUSTED" not in str(e):
            raise
        first = str(e).splitlines()[0][:300]
        print(f"asmr {args.command}: error: out of device memory ({first}); use a smaller model or batch",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
