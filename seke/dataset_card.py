"""The dataset card written with every export (LLaVA, ShareGPT/LLaMA-Factory, Hugging Face).

Why: a folder of JSON and Parquet says nothing about where its faces come from, whether their
images may be redistributed, which model and prompt produced which label, or how good the
labels are. A researcher publishing FEID/FEAB needs all of that on the Hub, and a reader needs
it to judge the data. So :func:`gather_facts` reads it from the lake — the tables' own columns,
not configuration — for exactly the partitions and table versions exported, and
:func:`render_card` writes a Hub card: YAML front matter (``license``, ``task_categories``,
``language``, ``size_categories``, ``source_datasets``, ``pretty_name``, ``configs``) and
sections for sources and licences, annotator/model/prompt/knowledge/calibration versions,
label origins, audit figures (or "not measured"), abstention and quarantine, the FEAB split
rule, known limitations, the citation and the lake table versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import polars as pl
import yaml

from seke.licences import Licence, LicencePolicy

SEKE_ARXIV = "2505.18168"
CITATION = """@article{seke2025,
  title   = {Self-verification with Emotion Knowledge Enhancement for Facial Expression Annotation},
  note    = {SEKE},
  journal = {arXiv preprint arXiv:2505.18168},
  year    = {2025},
  url     = {https://arxiv.org/abs/2505.18168}
}"""
NOT_MEASURED = "not measured"
NOT_RECORDED = "not recorded in the lake"
TASK_CATEGORIES = ["image-classification", "visual-question-answering", "image-text-to-text"]


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


@dataclass
class CardFacts:
    """Everything the card states, gathered from the lake (plain values, JSON-able)."""

    feid_records: int = 0
    feid_faces: int = 0
    feab_items: int = 0
    feab_faces: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    restricted_sources: list[str] = field(default_factory=list)
    unknown_licences: list[str] = field(default_factory=list)
    images_withheld: int = 0
    allow_restricted: bool = False
    annotators: list[str] = field(default_factory=list)
    prompt_versions: list[str] = field(default_factory=list)
    knowledge_versions: list[str] = field(default_factory=list)
    knowledge_current: str = NOT_RECORDED
    calibration: str = "none (raw confidences)"
    feid_origins: dict[str, float] = field(default_factory=dict)
    feab_gold_origins: dict[str, float] = field(default_factory=dict)
    label_origins: dict[str, dict[str, float]] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    labelled_faces: int = 0
    abstained: int = 0
    label_issues: int | None = None
    quarantine: dict[str, int] = field(default_factory=dict)
    near_duplicate_threshold: int = 6
    lake_versions: dict[str, Any] = field(default_factory=dict)


def _shares(values: Iterable[Any]) -> dict[str, float]:
    vals = [str(v) for v in values if v is not None]
    return {k: round(vals.count(k) / len(vals), 4) for k in sorted(set(vals))} if vals else {}


def _in_parts(frame: pl.DataFrame, parts: set[tuple[str, str]]) -> pl.DataFrame:
    if not frame.height or not {"source", "batch"} <= set(frame.columns):
        return frame
    keys = pl.DataFrame({"source": [p[0] for p in parts], "batch": [p[1] for p in parts]},
                        schema={"source": pl.String, "batch": pl.String})
    return frame.join(keys, on=["source", "batch"], how="semi")


def _read(lake: Any, table: str, columns: list[str] | None = None) -> pl.DataFrame:
    if not lake.exists(table):
        return pl.DataFrame()
    if columns is None:
        return lake.read_table(table)
    ds = lake.dataset(table)
    cols = [c for c in columns if c in ds.schema.names]
    frame = pl.from_arrow(ds.to_table(columns=cols))
    assert isinstance(frame, pl.DataFrame)
    return frame


def gather_facts(lake: Any, feid: pl.DataFrame, feab: pl.DataFrame | None, policy: LicencePolicy,
                 register: Mapping[str, Licence], lake_versions: Mapping[str, Any]) -> CardFacts:
    """Facts about the exported ``feid``/``feab`` frames, read from ``lake`` (a :class:`seke.lake.Lake`)
    for the (source, batch) partitions they come from."""
    from seke.audit import audit_report, gold_for_hidden
    from seke.near_dup import PHASH_THRESHOLD
    from seke.records import known_labels

    feab = feab if feab is not None else pl.DataFrame()
    f = CardFacts(near_duplicate_threshold=PHASH_THRESHOLD, lake_versions=dict(lake_versions),
                  allow_restricted=policy.allow_restricted)
    f.feid_records, f.feid_faces = feid.height, feid["face_id"].n_unique() if feid.height else 0
    f.feab_items, f.feab_faces = feab.height, feab["face_id"].n_unique() if feab.height else 0
    f.tasks = {f"feid/{t}": int(n) for t, n in feid.group_by("task").len().sort("task").iter_rows()} if feid.height else {}
    if feab.height:
        f.tasks.update({f"feab/{t}": int(n) for t, n in feab.group_by("task").len().sort("task").iter_rows()})
    f.feid_origins = _shares(feid["origin"]) if feid.height else {}
    f.feab_gold_origins = _shares(feab["gold_origin"]) if feab.height else {}
    frames = [x.select("face_id", "source", "batch") for x in (feid, feab) if x.height and "source" in x.columns]
    faces = pl.concat(frames).unique("face_id") if frames else pl.DataFrame(
        schema={"face_id": pl.String, "source": pl.String, "batch": pl.String})
    parts = set(faces.select("source", "batch").unique().iter_rows())

    # sources and licences
    per_source: dict[tuple[str, str], int] = {}
    for face_id, source in faces.select("face_id", "source").iter_rows():
        key = policy.keys.get(face_id, "")
        per_source[(source, key)] = per_source.get((source, key), 0) + 1
    for (source, key), n in sorted(per_source.items()):
        lic = register.get(key)
        restricted = lic is None or not lic.redistribution_allowed
        f.sources.append({"source": source, "licence_key": key, "faces": n,
                          "licence": lic.licence if lic else f"unknown ({key!r} is not in the register)",
                          "redistribution_allowed": bool(lic and lic.redistribution_allowed),
                          "images": ("embedded (--allow-restricted)" if restricted and policy.allow_restricted
                                     else "withheld (ids and relative paths only)" if restricted else "embedded"),
                          "attribution": lic.attribution if lic else "", "url": lic.url if lic else "",
                          "hub_licence": lic.hub_licence if lic else "other"})
        if restricted:
            f.restricted_sources.append(f"{source} ({key})")
    f.unknown_licences = list(policy.unknown)
    f.images_withheld = len(policy.withheld() & set(faces["face_id"].to_list()))

    # labels: versions, origins, abstention, audit
    labels = _in_parts(_read(lake, "verified_labels"), parts)
    if labels.height:
        f.labelled_faces = labels.height
        f.abstained = labels.filter(pl.col("status") == "abstained").height
        f.knowledge_versions = sorted({str(v) for v in labels["knowledge_version"].drop_nulls()})
        acc = labels.filter(pl.col("status") == "accepted")
        f.label_origins = {g: _shares(acc[f"{g}_origin"]) for g in ("expression", "va", "au")
                           if f"{g}_origin" in acc.columns}
        if "label_issue" in labels.columns:
            f.label_issues = int(labels["label_issue"].fill_null(False).sum())
        audited = labels.filter(pl.col("audit_hidden").list.len() > 0) if "audit_hidden" in labels.columns else labels.head(0)
        if audited.height:
            raw = _in_parts(_read(lake, "raw_faces", ["face_id", "source", "batch", "known_expression",
                                                      "known_valence", "known_arousal", "known_aus"]), parts)
            known = {r["face_id"]: known_labels(r) for r in raw.iter_rows(named=True)}
            rows = audited.to_dicts()
            f.audit = audit_report(rows, gold_for_hidden(known, {r["face_id"]: r["audit_hidden"] for r in rows}))
    samples = _in_parts(_read(lake, "mc_samples", ["backend", "model", "source", "batch"]), parts)
    if samples.height:
        f.annotators = sorted({f"{b}/{m}" for b, m in samples.select("backend", "model").unique().iter_rows()})
    prompts = _in_parts(_read(lake, "knowledge_prompts", ["prompt_version", "knowledge_version", "source", "batch"]), parts)
    if prompts.height:
        f.prompt_versions = sorted({str(v) for v in prompts["prompt_version"].drop_nulls()})
    kc = _read(lake, "knowledge_current")
    if kc.height:
        row = kc.row(0, named=True)
        f.knowledge_current = f"{row.get('version')} (fingerprint {str(row.get('fingerprint'))[:12]}; {row.get('provenance')})"
    cc = _read(lake, "calibration_current")
    if cc.height:
        row = cc.row(0, named=True)
        f.calibration = f"{row.get('version')} ({row.get('method')}, fitted {row.get('created_at')})"
    q = _in_parts(_read(lake, "quarantine", ["reason", "stage", "source", "batch"]), parts)
    if q.height:
        f.quarantine = {f"{s}:{r}": int(n) for s, r, n in
                        q.group_by("stage", "reason").len().sort("stage", "reason").iter_rows()}
    return f


def hub_licence(facts: CardFacts) -> str:
    """One Hub licence id when every source shares it, else ``other`` (mixed or restricted)."""
    ids = {s["hub_licence"] for s in facts.sources}
    return ids.pop() if len(ids) == 1 else "other"


def front_matter(facts: CardFacts, configs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    licence = hub_licence(facts)
    meta: dict[str, Any] = {"license": licence}
    if licence == "other":
        meta["license_name"] = "mixed-source-licences"
        meta["license_link"] = "LICENSE.md"
    meta.update({
        "task_categories": list(TASK_CATEGORIES), "language": ["en"],
        "size_categories": [size_category(max(facts.feid_records, facts.feab_items))],
        "source_datasets": ["original"] + [f"extended|{s}" for s in sorted({s['source'] for s in facts.sources})],
        "pretty_name": "SEKE facial-emotion instruction data (FEID) and benchmark (FEAB)",
        "tags": ["facial-expression", "action-units", "valence-arousal", "seke"],
    })
    if configs:
        meta["configs"] = configs
    return meta


def _fmt(v: Any) -> str:
    if v is None:
        return NOT_MEASURED
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def render_card(facts: CardFacts, configs: list[dict[str, Any]] | None = None, layout: str = "hf") -> str:
    """The card as Markdown with Hub YAML front matter (``configs`` for the HF layout)."""
    head = "---\n" + yaml.safe_dump(front_matter(facts, configs), sort_keys=False, allow_unicode=True) + "---\n"
    a = facts.audit
    audit_rows = [[k, _fmt(a.get(k))] for k in ("audit_faces", "expression_accuracy", "expression_macro_f1",
                                                  "au_mean_f1", "valence_sign_agreement", "expression_ece",
                                                  "au_ece", "va_ece")]
    audit_rows.append(["certified error bound", NOT_MEASURED])
    restricted = ", ".join(facts.restricted_sources) or "none"
    withheld_note = (f"{facts.images_withheld} faces' images are **withheld**: records carry the face id and "
                     f"the image's path relative to the landing zone (`<source>/<batch>/<file>`) instead of the "
                     f"image; a licence holder points the loader at their own copy."
                     if facts.images_withheld else
                     ("Restricted images are embedded because the export was run with `--allow-restricted`: "
                      "**do not publish this copy**." if facts.allow_restricted and facts.restricted_sources
                      else "Every image in this export may be redistributed under its source's licence."))
    unknown = ("\n\nUnknown or misspelt licence keys (treated as restricted): "
               + ", ".join(f"`{k}`" for k in facts.unknown_licences)) if facts.unknown_licences else ""
    sections = [
        "# SEKE facial-emotion data: FEID and FEAB",
        f"Facial-emotion annotations at three granularities (expression, valence–arousal, FACS action units) "
        f"produced by the SEKE platform (Self-verification with Emotion Knowledge Enhancement, arXiv "
        f"{SEKE_ARXIV}). **FEID**: {facts.feid_records} instruction records of {facts.feid_faces} faces. "
        f"**FEAB**: {facts.feab_items} benchmark items of {facts.feab_faces} faces. This copy: `{layout}` layout.",
        "## Sources and licences\n\n" + _table(
            ["source", "licence key", "faces", "licence", "redistribution", "images", "attribution", "url"],
            [[s["source"], s["licence_key"], s["faces"], s["licence"], "allowed" if s["redistribution_allowed"] else "not allowed",
              s["images"], s["attribution"], s["url"]] for s in facts.sources])
        + f"\n\nRestricted sources (their terms forbid redistributing the images): {restricted}. " + withheld_note + unknown,
        "## How the labels were made\n\n" + _table(["what", "version"], [
            ["annotator / model", ", ".join(facts.annotators) or NOT_RECORDED],
            ["prompt version", ", ".join(facts.prompt_versions) or NOT_RECORDED],
            ["knowledge version of the labels", ", ".join(facts.knowledge_versions) or NOT_RECORDED],
            ["knowledge current at export", facts.knowledge_current],
            ["confidence calibration", facts.calibration]])
        + "\n\nHuman labels already in a source are injected as facts and never overwritten; the annotator "
          "fills only missing granularities with Monte Carlo sampling and self-verification (SV-UAMC), "
          "and abstains instead of guessing.",
        "## Label origins\n\n"
        "`human` (from the source or a reviewer), `verified` (accepted or corrected by self-verification), "
        "`generated` (annotator samples accepted as they are), `derived` (computed from other granularities, "
        "e.g. valence–arousal from expression probabilities).\n\n" + _table(
            ["set", "shares"],
            [["FEID records (weakest origin per record)", json.dumps(facts.feid_origins)],
             ["FEAB gold", json.dumps(facts.feab_gold_origins)]]
            + [[f"accepted labels: {g}", json.dumps(s)] for g, s in facts.label_origins.items()]),
        "## Quality (audit mode)\n\nFigures from faces whose human label was hidden from the annotator and "
        "compared afterwards (accepted faces only); \"not measured\" where no such faces were exported.\n\n"
        + _table(["figure", "value"], audit_rows)
        + ("\n\nSuspected human-label errors (label-noise audit): "
           + (_fmt(facts.label_issues) if facts.label_issues is not None else NOT_MEASURED)),
        "## Abstention and quarantine\n\n" + _table(["figure", "value"], [
            ["faces labelled", facts.labelled_faces], ["abstained (sent to review, not exported)", facts.abstained],
            ["abstention rate", _fmt(facts.abstained / facts.labelled_faces) if facts.labelled_faces else NOT_MEASURED]]
            + [[f"quarantined {k}", v] for k, v in facts.quarantine.items()]),
        "## FEAB split rule\n\n"
        "A face goes to FEAB or FEID by a hash of `(seed, subject)` where the subject is known (all faces of a "
        "subject on one side, in every batch), else by a stratified hash of `(seed, face_id)` per expression "
        f"(FEAB fraction 0.2, seed 0). Near-duplicate crops (perceptual hash within "
        f"{facts.near_duplicate_threshold} bits) form groups that are kept on one side like subjects, also across batches (a face follows "
        "the side its near-duplicates in earlier batches of the source were published on); the "
        "blocking check `split_leakage` refuses to publish a partition where a group or a subject straddles "
        "the split. FEAB gold is human where a human label exists, else self-verified and flagged "
        "(`gold_flagged`).",
        "## Known limitations\n\n" + "\n".join(f"- {x}" for x in [
            "Generated and derived labels come from a model; their error is estimated only where audit mode ran.",
            "Valence–arousal of sources without human VA is derived from expression probabilities, not measured.",
            "Human labels of crowd-labelled sources (FER2013, the wild set) are noisy; suspected errors are flagged, "
            "not corrected.",
            "Near-duplicates are grouped within a batch; near-duplicates across batches are not yet grouped.",
            f"Restricted sources: {restricted}."]),
        "## Citation\n\n```bibtex\n" + CITATION + "\n```",
        "## Lake table versions exported\n\n```json\n" + json.dumps(facts.lake_versions, indent=1) + "\n```",
    ]
    return head + "\n" + "\n\n".join(sections) + "\n"


def licence_file(facts: CardFacts) -> str:
    """``LICENSE.md``: the per-source licences the card's ``license: other`` points to."""
    lines = ["# Licences of this dataset's sources", ""]
    for s in facts.sources:
        lines.append(f"- **{s['source']}** (`{s['licence_key']}`, {s['faces']} faces): {s['licence']}; "
                     f"redistribution {'allowed' if s['redistribution_allowed'] else 'NOT allowed'}; "
                     f"images {s['images']}. {s['attribution']} {s['url']}".rstrip())
    lines += ["", "Labels produced by SEKE are released with the dataset; the images remain under their "
                  "sources' terms."]
    return "\n".join(lines) + "\n"
