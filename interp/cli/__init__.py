"""The ``interp`` command: ``demo``, ``extract``, ``ilo`` (the main job) and ``freeze-experiment``.

Each sub-command lives in its own module (:mod:`.extract`, :mod:`.ilo`, :mod:`.freeze`) with an
``add_parser(subparsers)`` that declares its options through :mod:`.common` (choices read from
the registries) and a function that runs it; every job that writes files publishes them all or
nothing with one manifest (:func:`interp.cli.common.publish`). Nothing heavy is imported before a
command runs, so ``interp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from interp.cli import extract, freeze, ilo

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (extract, ilo, freeze):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
