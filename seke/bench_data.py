"""Which labelled faces a benchmark measures, said out loud.

Why: ``bench/sv_uamc.py`` once kept FER2013 rows only when their split was literally named
``validation`` and silently measured nothing for a set that named it otherwise, then fell back
to the simulated annotator without saying so. The benches now choose rows through
:func:`select_split` (the split is an option; a set with a split column and no row of the asked
split is an error naming the splits it has), refuse to run on no data (:class:`NoData`), and
print what they measured in their RESULT line with :func:`data_field`. The default split,
``auto``, measures a dev split where a set has one and a held-out copy's own test splits
otherwise, and a bench's ``--data`` may be one set or a folder of sets (:func:`labelled_sets`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

#: ``--split`` value that picks a dev-or-held-out split per set (:func:`resolve_split`): the
#: benches' default, so that a folder of sets is measured with whatever splits it has.
AUTO_SPLIT = "auto"
#: The dev split ``auto`` prefers (tune on dev splits only; test sets are held back outside
#: ../shared/data), and the split it never measures while a set has any other.
DEV_SPLIT, TRAIN_SPLIT = "validation", "train"
#: Every bench's default ``--split``.
DEFAULT_SPLIT = AUTO_SPLIT

#: ``--split`` help shared by the benches.
SPLIT_HELP = (f"rows of this split in sets that have a split column: '{AUTO_SPLIT}' (default) "
              f"{DEV_SPLIT} where a set has it, else its splits other than {TRAIN_SPLIT}; "
              "'a+b' several splits; 'all' every row")

#: ``--expression-checkpoint`` / ``--expression-checkpoint-weights`` help shared by the benches.
CHECKPOINT_HELP = ("a checkpoint folder from the training assets as the offline annotator's second "
                   "expression model, or several comma-separated (an ensemble, their probabilities "
                   "averaged) (RESULT source=offline+checkpoint)")
CHECKPOINT_WEIGHTS_HELP = ("its pooling weight per source, e.g. 'ckplus=0,*=0.4' (as "
                           "SEKE_EXPRESSION_CHECKPOINT_WEIGHTS; default 0.4 for every source)")

#: Dev sets whose manifests name no subject but whose file names do (``wild``: LFW-style
#: ``George_W_Bush_0003.jpg``, 682 persons in its 1,174 faces), as ``--subject-patterns`` takes
#: them: the benches' default, so that one person's photos stay in one half and certification
#: counts persons, not photos.
DEV_SUBJECT_PATTERNS = r"wild=(?P<subject>.+)_\d+\.\w+"
SUBJECT_PATTERNS_HELP = ("per set, a regex that reads the subject from a file name where the manifest "
                         "has no subject_id ('set=regex' entries separated by ';', as "
                         f"SEKE_SUBJECT_PATTERNS; 'none': every face its own unit; default {DEV_SUBJECT_PATTERNS!r})")

T = TypeVar("T")


def add_dev_face_arguments(ap: argparse.ArgumentParser, default_data: Path, per_set: int = 5000,
                           per_set_help: str = "dev faces per set (default: all of them)") -> None:
    """The options every quality bench that reads dev faces shares: ``--data``, ``--split``,
    ``--per-set`` and ``--subject-patterns`` (``default_data`` from the bench: this module reads
    no environment)."""
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--split", default=DEFAULT_SPLIT, type=split_option, help=SPLIT_HELP)
    ap.add_argument("--per-set", type=int, default=per_set, help=per_set_help)
    ap.add_argument("--subject-patterns", default=None, type=subject_patterns_option, help=SUBJECT_PATTERNS_HELP)


def add_checkpoint_arguments(ap: argparse.ArgumentParser) -> None:
    """``--expression-checkpoint`` and ``--expression-checkpoint-weights`` (a bad weight spec is
    an argparse error before anything runs)."""
    ap.add_argument("--expression-checkpoint", default=None, help=CHECKPOINT_HELP)
    ap.add_argument("--expression-checkpoint-weights", default=None, type=checkpoint_weights_option,
                    help=CHECKPOINT_WEIGHTS_HELP)


def split_option(value: str) -> str | None:
    """``--split`` as :func:`select_split` takes it: ``all`` is None (every row)."""
    return None if value == "all" else value


def checkpoint_weights_option(value: str) -> dict[str, float]:
    """``--expression-checkpoint-weights`` parsed, a bad spec an argparse error naming the bad part."""
    from seke.annotators.offline import parse_second_weights

    try:
        return parse_second_weights(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def subject_patterns_option(value: str) -> dict[str, str]:
    """``--subject-patterns`` parsed, a bad entry an argparse error naming it."""
    from seke.manifest import parse_subject_patterns

    try:
        return parse_subject_patterns(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class NoData(RuntimeError):
    """A benchmark asked for real faces and found none (or none of the asked split)."""


def resolve_split(splits: Iterable[str | None], split: str | None) -> str | None:
    """The split a set's rows are cut to: None (every row) when ``split`` is None or the set has
    no split labels; for ``auto``, ``validation`` where the set has it, else every split but
    ``train`` joined with ``+`` (a held-out copy's ``PublicTest+PrivateTest``), else ``train``;
    any other value as asked (``a+b`` names several).

    Why: a held-out set ships its own split names; measuring it must not need them spelt out,
    and must never fall back to training rows while the set has others.
    """
    present = sorted({s for s in splits if s})
    if split is None or not present:
        return None
    if split != AUTO_SPLIT:
        return split
    if DEV_SPLIT in present:
        return DEV_SPLIT
    return "+".join(s for s in present if s != TRAIN_SPLIT) or TRAIN_SPLIT


def select_split(rows: Iterable[T], split_of: Callable[[T], str | None], split: str | None,
                 set_name: str) -> list[T]:
    """Rows of the split :func:`resolve_split` picks; all rows when it picks None.

    A set whose rows carry split labels but none of the picked split raises :class:`NoData`
    naming the splits it has, instead of quietly yielding nothing.
    """
    rows = list(rows)
    labels = [split_of(r) for r in rows]
    chosen = resolve_split(labels, split)
    if chosen is None:
        return rows
    wanted = set(chosen.split("+"))
    keep = [r for r, s in zip(rows, labels) if s in wanted]
    if not keep:
        present = sorted({s for s in labels if s})
        raise NoData(f"{set_name}: no rows with split={chosen!r} (splits present: {', '.join(present)}); "
                     f"pass --split with one of them, or --split {AUTO_SPLIT}")
    return keep


def labelled_sets(data: Path, preferred: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """``(name, folder)`` of the labelled sets at ``data``: ``data`` itself when it holds a
    ``manifest.csv`` (one set, named after its folder), else every sub-folder that holds one,
    the ``preferred`` names first in their order and the rest by name.

    Why: a benchmark given one set (``--data ../shared/data/ckplus``) or a folder of sets under
    other names (a held-out copy) must measure them, not look only for the dev sets' names and
    then report that it found nothing. Raises :class:`NoData` when there is no set.
    """
    if (data / "manifest.csv").is_file():
        return [(data.resolve().name, data)]
    found = sorted((d for d in data.iterdir() if (d / "manifest.csv").is_file()), key=lambda d: d.name) \
        if data.is_dir() else []
    rank = {name: i for i, name in enumerate(preferred)}
    found.sort(key=lambda d: (rank.get(d.name, len(rank)), d.name))
    if not found:
        raise NoData(f"no manifest.csv in {data} nor in any folder directly under it")
    return [(d.name, d) for d in found]


def data_field(counts: Mapping[str, int], splits: Mapping[str, str | None] | None = None) -> str:
    """``data=`` value of a RESULT line: set names, the split each was cut to (if any) and face
    counts, e.g. ``fer2013[validation]:100,ckplus:98``."""
    if not counts:
        raise NoData("no faces measured")
    splits = splits or {}
    return ",".join(f"{name}[{splits[name]}]:{n}" if splits.get(name) else f"{name}:{n}"
                    for name, n in counts.items())


def class_prior_rate(labels: Iterable[object]) -> float:
    """Share of the commonest label: the accuracy of always answering it, a baseline every
    classifier's RESULT figure is printed beside (NaN for no labels)."""
    counts: dict[object, int] = {}
    for x in labels:
        counts[x] = counts.get(x, 0) + 1
    return max(counts.values()) / sum(counts.values()) if counts else float("nan")
