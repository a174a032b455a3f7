"""SEKE science: taxonomy, knowledge, prompts, sampling, aggregation, metrics, face I/O, annotators.

Plain Python with no Dagster imports, so every piece can be unit-tested and reused from a
notebook or a benchmark without an orchestrator.
"""

__version__ = "0.1.0"
