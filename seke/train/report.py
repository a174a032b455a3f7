"""The FEID vs human-only ablation as a table: one row per metric both checkpoints report."""

from __future__ import annotations

from typing import Any

#: (evaluation set, head, metric) rows of the comparison, in reading order.
ABLATION_METRICS = [
    ("fer2013_validation", "expression_tta", "accuracy"), ("fer2013_validation", "expression", "accuracy"),
    ("feab", "expression", "accuracy"), ("feab", "expression", "macro_f1"),
    ("feab", "va", "ccc_valence"), ("feab", "va", "ccc_arousal"), ("feab", "aus", "mean_f1"),
    ("ckplus", "expression", "accuracy"), ("ckplus", "aus", "mean_f1"),
]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == v


def ablation_table(multitask: dict[str, Any], human_only: dict[str, Any]) -> str:
    """Markdown: metric | multi-task (FEID) | human expression only | Δ, from the two
    checkpoints' ``evaluation`` blocks; metrics neither reports are left out."""
    rows = []
    for ev, head, key in ABLATION_METRICS:
        vals = [run.get(ev, {}).get(head, {}).get(key) for run in (multitask, human_only)]
        if all(v is None for v in vals):
            continue
        fmt = [f"{v:.4f}" if _number(v) else "n/a" for v in vals]
        delta = f"{vals[0] - vals[1]:+.4f}" if all(_number(v) for v in vals) else ""
        rows.append(f"| {ev} {head} {key} | {fmt[0]} | {fmt[1]} | {delta} |")
    return "| metric | multi-task (FEID) | human expression only | Δ |\n|---|---|---|---|\n" + "\n".join(rows)
