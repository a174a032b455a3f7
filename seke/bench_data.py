"""Which labelled faces a benchmark measures, said out loud.

Why: ``bench/sv_uamc.py`` once kept FER2013 rows only when their split was literally named
``validation`` and silently measured nothing for a set that named it otherwise, then fell back
to the simulated annotator without saying so. The benches now choose rows through
:func:`select_split` (the split is an option; a set with a split column and no row of the asked
split is an error naming the splits it has), refuse to run on no data (:class:`NoData`), and
print what they measured in their RESULT line with :func:`data_field`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, TypeVar

#: The split benches measure by default: a dev split (tune on dev splits only; test sets are
#: held back outside ../shared/data).
DEFAULT_SPLIT = "validation"

T = TypeVar("T")


class NoData(RuntimeError):
    """A benchmark asked for real faces and found none (or none of the asked split)."""


def select_split(rows: Iterable[T], split_of: Callable[[T], str | None], split: str | None,
                 set_name: str) -> list[T]:
    """Rows of ``split``; all rows when ``split`` is None or the set has no split labels at all.

    A set whose rows carry split labels but none equal to ``split`` raises :class:`NoData`
    naming the splits it has, instead of quietly yielding nothing.
    """
    rows = list(rows)
    present = sorted({s for s in (split_of(r) for r in rows) if s})
    if split is None or not present:
        return rows
    keep = [r for r in rows if split_of(r) == split]
    if not keep:
        raise NoData(f"{set_name}: no rows with split={split!r} (splits present: {', '.join(present)}); "
                     f"pass --split with one of them")
    return keep


def split_used(splits: Iterable[str | None], split: str | None) -> str | None:
    """The split a set was cut to by :func:`select_split`: None when it was used whole."""
    return split if split is not None and any(splits) else None


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
