"""Command line: ``python -m seke <command>`` (also installed as ``seke``)."""

from seke.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
