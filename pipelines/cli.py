"""The installed ``seke`` command: :func:`seke.cli.main` plus the commands that need Dagster.

``seke ingest DIR [--source S] [--batch B]`` lands a folder and runs ``annotate_batch`` for it
on the persistent instance (:mod:`pipelines.ingest`); ``seke estimate DIR`` prints what
annotating it would cost with the configured annotator (:mod:`pipelines.estimate`); every other command is the science
layer's CLI (``sql``, ``warehouse``, ``export``, ``evaluate``, ``vacuum``, ``fetch-weights``).
"""

import sys

from pipelines.estimate import add_estimate_command, estimate_command
from pipelines.ingest import add_ingest_command, ingest_command
from seke.cli import main as seke_main


def main(argv: list[str] | None = None) -> int:
    return seke_main(sys.argv[1:] if argv is None else argv,
                     extra_commands={"ingest": (add_ingest_command, ingest_command),
                                     "estimate": (add_estimate_command, estimate_command)})


if __name__ == "__main__":
    raise SystemExit(main())
