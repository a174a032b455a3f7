"""``seke`` command line: fetch weights, run SQL over the lake, exports and evaluations."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seke", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch-weights", help="download and sha256-check offline models and demo photos")
    args = parser.parse_args(argv)
    if args.command == "fetch-weights":
        from seke.weights import fetch_all

        fetch_all()
        return 0
    parser.print_help(sys.stderr)
    return 2
