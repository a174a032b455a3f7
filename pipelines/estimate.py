"""``seke estimate DIR``: what annotating a folder of faces would cost, before any call.

Uses the configured annotator (``SEKE_ANNOTATOR``: one endpoint, a pool, or offline; prices,
image detail and token rule from the same settings the run uses), the lake's current knowledge
(or v1 when there is none yet) to render the real prompts, and the lake's ``mc_samples`` /
``verified_labels`` of earlier runs for the expected samples per face (see
:mod:`seke.estimate`). Faces are found in the folder the way ingest finds them.
"""

import argparse
import json
from pathlib import Path
from typing import Any

from seke.estimate import Estimate, estimate_run, history_from_lake
from seke.lake import Lake


def faces_of_folder(folder: Path) -> list[Any]:
    """FaceItems of a folder (face detection as at ingest; manifest labels become facts)."""
    from seke.annotation import FaceItem, Labels
    from seke.faces import ingest_batch

    result = ingest_batch(folder)
    out = []
    for c in result.crops:
        k = c.known
        known = Labels(k.expression, k.valence, k.arousal,
                       None if k.aus is None else {a: 1.0 for a in k.aus})
        out.append(FaceItem(c.face_id, c.crop_png, known, source="estimate", subject_id=k.subject_id,
                            withheld=tuple(k.invalid)))
    return out


def estimate_for(faces: list[Any], annotator: Any, lake: Lake, config: Any = None,
                 batch_api: bool = False) -> Estimate:
    from seke.knowledge import knowledge_v1, read_current_knowledge
    from seke.prompts import build_annotation_prompt
    from seke.sv_uamc import SamplingConfig

    try:
        knowledge = read_current_knowledge(lake)
    except RuntimeError:
        knowledge = knowledge_v1()
    prompts = {f.face_id: build_annotation_prompt(f.known, knowledge, f.withheld) for f in faces}
    config = config or SamplingConfig()
    members, strategy, verifier = annotator.estimate_plan(batch_api)
    return estimate_run(faces, prompts, members, config, history_from_lake(lake, config.strategy),
                        strategy, verifier, knowledge,
                        cross_check=bool(getattr(annotator, "pool_cross_check", True)))


def add_estimate_command(sub: Any) -> None:
    p = sub.add_parser("estimate", help="expected calls, tokens and USD per annotator for a folder, before any call")
    p.add_argument("folder", type=Path)
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.add_argument("--batch-api", action="store_true",
                   help="price every round at the Batch API price (annotate_faces batch_api / vllm_backfill)")


def estimate_command(args: argparse.Namespace) -> int:
    from dagster import build_resources

    from resources.settings import default_resources

    if not args.folder.is_dir():
        print(f"not a folder: {args.folder}")
        return 2
    configured = default_resources()  # read the environment now (not at code-location import)
    with build_resources({"lake": configured["lake"], "annotator": configured["annotator"]}) as res:
        lake = res.lake.lake()
        faces = faces_of_folder(args.folder)
        est = estimate_for(faces, res.annotator, lake, batch_api=getattr(args, "batch_api", False))
    print(json.dumps(est.as_dict(), indent=2) if args.json else est.table())
    return 0
