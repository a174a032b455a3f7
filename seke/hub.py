"""Publishing an export folder to the Hugging Face Hub (``seke export --push REPO_ID``).

Why a plan first: pushing is irreversible (a public dataset is mirrored within minutes), so the
exact call is built as data (:func:`push_plan`: the files, the repo, the ``upload_folder``
arguments), shown by ``--dry-run``, and refused when the folder embeds images whose licence
forbids redistribution. :func:`push` then makes that call with ``huggingface_hub.HfApi`` (the
token comes from huggingface_hub's own login/``HF_TOKEN``; this module never reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IGNORE_PATTERNS = [".*", "**/.*"]   # temporary files of atomic writes


@dataclass
class PushPlan:
    repo_id: str
    folder: Path
    files: list[tuple[str, int]]                  # (path in the repo, bytes)
    create_repo: dict[str, Any] = field(default_factory=dict)
    upload_folder: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        total = sum(n for _, n in self.files)
        lines = [f"would create (if missing) dataset repo {self.repo_id} and upload {len(self.files)} files "
                 f"({total / 1e6:.2f} MB) from {self.folder}:"]
        lines += [f"  {p}  {n} bytes" for p, n in self.files]
        return "\n".join(lines)


def push_plan(folder: str | Path, repo_id: str, *, private: bool = True,
              commit_message: str = "Upload SEKE export") -> PushPlan:
    """The upload of ``folder`` (an HF-layout export with its README card) to ``repo_id``."""
    root = Path(folder)
    if not (root / "README.md").is_file():
        raise FileNotFoundError(f"{root} has no README.md dataset card: run `seke export` first")
    files = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return PushPlan(repo_id, root, files,
                    create_repo={"repo_id": repo_id, "repo_type": "dataset", "private": private, "exist_ok": True},
                    upload_folder={"repo_id": repo_id, "repo_type": "dataset", "folder_path": str(root),
                                   "commit_message": commit_message, "ignore_patterns": IGNORE_PATTERNS})


def push(plan: PushPlan, api: Any = None) -> Any:
    """Create the repo if needed and upload the folder; returns huggingface_hub's commit info."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(**plan.create_repo)
    return api.upload_folder(**plan.upload_folder)
