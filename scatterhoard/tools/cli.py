"""Register the operator tools as ``hoard`` subcommands: ``hoard check`` and ``hoard snoop``."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from . import check, snoop

    check.add_parser(sub)
    snoop.add_parser(sub)
