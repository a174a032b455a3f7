"""``seke`` command line: fetch weights, run SQL over the lake, exports and evaluations.

Sub-commands (``seke <cmd> -h`` for options):

* ``fetch-weights`` — download and sha256-check the offline models;
* ``warehouse`` — (re)build the analysts' DuckDB file (a view per lake table);
* ``sql "SELECT …"`` — run a query (or a saved one: ``seke sql class_balance_per_source``,
  see ``seke sql --list``) against the read-only DuckDB file and print a table; only queries
  run, and they cannot touch files outside the lake;
* ``export`` — FEID (and FEAB) as LLaVA JSON, ShareGPT/LLaMA-Factory JSON, face crops and a
  Hugging Face ``datasets`` Parquet folder, each with a dataset card (README.md) and LICENSE.md;
  images of sources whose licence forbids redistribution are withheld unless
  ``--allow-restricted``; an existing export is replaced only with ``--overwrite``;
  ``--push REPO_ID [--dry-run]`` uploads the HF folder to the Hub;
* ``evaluate`` — score an annotator on FEAB, store the run, print the comparison table;
* ``vacuum`` — delete lake files that no recent or pinned table version needs.

``export`` and ``evaluate`` take ``--feid-version`` / ``--feab-version`` to pin a table version,
record the versions they used and pin them, so ``vacuum`` keeps what they refer to.

Paths come from ``SEKE_LAKE_URI`` (default ``./lake``) and ``SEKE_DUCKDB_PATH`` (default
``./lake/warehouse.duckdb``), or the ``--lake`` / ``--db`` options; fetched weights from
``SEKE_CACHE_DIR``. This entry point is the one module of ``seke`` that reads the environment
(documented exception: it *is* the configuration layer of a command line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

QUERIES_DIR = Path(__file__).resolve().parents[1] / "queries"


def default_lake_uri() -> str:
    return os.environ.get("SEKE_LAKE_URI", "./lake")


def default_db_path() -> str:
    return os.environ.get("SEKE_DUCKDB_PATH", os.path.join("lake", "warehouse.duckdb"))


# ---- table printing ------------------------------------------------------------------------

def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = f"<{len(bytes(value))} bytes>"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 40) -> str:
    """An aligned plain-text table (numbers right-aligned), like the DuckDB shell prints."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
               for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return " | ".join(v.rjust(w) if numeric[i] else v.ljust(w)
                          for i, (v, w) in enumerate(zip(values, widths))).rstrip()
    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(list(columns)), sep, *(line(r) for r in cells)])


def resolve_query(text: str) -> str:
    """SQL text: a saved query name (``queries/<name>.sql``), a path to a .sql file, or SQL."""
    candidate = QUERIES_DIR / f"{text}.sql"
    if candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    if text.endswith(".sql") and Path(text).is_file():
        return Path(text).read_text(encoding="utf-8")
    return text


def saved_queries() -> dict[str, str]:
    """Saved query name → its first comment line (the description)."""
    out = {}
    for p in sorted(QUERIES_DIR.glob("*.sql")):
        first = p.read_text(encoding="utf-8").splitlines()[0] if p.stat().st_size else ""
        out[p.stem] = first.lstrip("- ").strip()
    return out


def run_sql(query: str, db_path: str, max_rows: int = 200) -> tuple[list[str], list[tuple], bool]:
    """Run ``query`` on the read-only warehouse; returns (columns, rows, truncated)."""
    from seke.warehouse import check_read_only_sql, connect_readonly

    con = connect_readonly(db_path)
    try:
        sql = resolve_query(query)
        check_read_only_sql(con, sql)
        cur = con.execute(sql)
        if cur.description is None:
            return [], [], False
        columns = [d[0] for d in cur.description]
        rows = cur.fetchmany(max_rows + 1)
    finally:
        con.close()
    return columns, rows[:max_rows], len(rows) > max_rows


# ---- sub-commands --------------------------------------------------------------------------

def _cmd_sql(args: argparse.Namespace) -> int:
    if args.list:
        for name, desc in saved_queries().items():
            print(f"{name:34s} {desc}")
        return 0
    if not args.query:
        print("seke sql: give a query, a saved query name or --list", file=sys.stderr)
        return 2
    if args.build:
        from seke.lake import Lake
        from seke.warehouse import build_warehouse

        build_warehouse(Lake(args.lake), args.db)
    import duckdb

    from seke.warehouse import ForbiddenSQL

    try:
        columns, rows, truncated = run_sql(args.query, args.db, args.max_rows)
    except FileNotFoundError as exc:
        print(f"seke sql: {exc} (or pass --build)", file=sys.stderr)
        return 1
    except ForbiddenSQL as exc:
        print(f"seke sql: refused: {exc}", file=sys.stderr)
        return 2
    except duckdb.PermissionException as exc:
        print(f"seke sql: refused: only the lake's own tables can be read ({exc})", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"seke sql: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1))
    elif args.format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(rows)
    else:
        print(format_table(columns, rows))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{', truncated' if truncated else ''})")
    return 0


def _cmd_warehouse(args: argparse.Namespace) -> int:
    from seke.lake import Lake
    from seke.warehouse import build_warehouse

    views = build_warehouse(Lake(args.lake), args.db)
    print(f"{args.db}: {len(views)} views: {', '.join(views) or '(lake is empty)'}")
    return 0


def _read(lake_uri: str, table: str, source: str | None, batch: str | None,
          version: int | None = None):
    """A table (at ``version``, else the latest) filtered to a source/batch, and the version
    read (``None`` when the table does not exist)."""
    import polars as pl

    from seke.lake import Lake

    lake = Lake(lake_uri)
    if not lake.exists(table):
        return pl.DataFrame(), None
    if version is None:
        version = lake.version(table)
    frame = lake.read_table(table, version=version)
    if source:
        frame = frame.filter(pl.col("source") == source)
    if batch:
        frame = frame.filter(pl.col("batch") == batch)
    return frame, version


def _pin_used(lake_uri: str, used: dict[str, int | None], by: str) -> None:
    """Record the table versions a product was made from, so a vacuum keeps them."""
    from seke.lake import Lake

    lake = Lake(lake_uri)
    for table, version in used.items():
        if version is not None:
            lake.pin(table, version, by)


def _cmd_vacuum(args: argparse.Namespace) -> int:
    from seke.lake import PINS_TABLE, Lake

    lake = Lake(args.lake)
    total = 0
    for table in args.table or [t for t in lake.tables() if t != PINS_TABLE]:
        files = lake.vacuum(table, retention_hours=args.retention_hours, dry_run=args.dry_run)
        total += len(files)
        pins = lake.pinned_versions(table)
        print(f"{table}: {len(files)} file(s) {'would be ' if args.dry_run else ''}deleted"
              + (f"; pinned versions kept: {pins}" if pins else ""))
    print(f"{total} file(s) {'would be ' if args.dry_run else ''}deleted in total")
    return 0


#: What ``seke export`` writes inside ``--out`` (``--overwrite`` removes exactly these first).
EXPORT_PARTS = ("llava", "sharegpt", "hf", "lake_versions.json")


def _export_faces(lake_uri: str, face_ids: set[str]):
    """raw_faces columns the licence policy needs, for the exported faces only (no crops)."""
    import polars as pl

    from seke.lake import Lake

    lake = Lake(lake_uri)
    cols = ["face_id", "licence", "source", "batch", "file_name"]
    if not lake.exists("raw_faces"):
        return pl.DataFrame({"face_id": sorted(face_ids)}, schema={"face_id": pl.String})
    ds = lake.dataset("raw_faces")
    frame = pl.from_arrow(ds.to_table(columns=[c for c in cols if c in ds.schema.names]))
    return frame.filter(pl.col("face_id").is_in(sorted(face_ids)))


def _cmd_export(args: argparse.Namespace) -> int:
    import shutil

    import polars as pl

    from seke import exports
    from seke.dataset_card import gather_facts, licence_file, render_card
    from seke.lake import Lake
    from seke.licences import face_licences, load_register, policy_for, withheld_images

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        print(f"seke export: {out} already exists and is not empty; pass --overwrite to replace the "
              f"export in it ({', '.join(EXPORT_PARTS)})", file=sys.stderr)
        return 1
    feid, feid_version = _read(args.lake, "feid", args.source, args.batch, args.feid_version)
    used = {"feid": feid_version}
    if feid.height == 0:
        print(f"seke export: no FEID records in {args.lake} (materialize the feid asset)", file=sys.stderr)
        return 1
    if args.origins:
        feid = feid.filter(feid["origin"].is_in(args.origins.split(",")))
    feab = pl.DataFrame()
    if args.format in ("hf", "all"):
        feab, used["feab"] = _read(args.lake, "feab", args.source, args.batch, args.feab_version)
    face_ids = set(feid["face_id"].to_list()) | (set(feab["face_id"].to_list()) if feab.height else set())
    faces = _export_faces(args.lake, face_ids)
    if "source" not in faces.columns:
        faces = faces.join(pl.concat([x.select("face_id", "source") for x in (feid, feab) if x.height]).unique("face_id"),
                           on="face_id", how="left")
    register = load_register()
    keys = face_licences(faces)
    for f, src in pl.concat([x.select("face_id", "source") for x in (feid, feab) if x.height]).iter_rows():
        keys.setdefault(f, src)   # a face missing from raw_faces: registered under its source
    policy = policy_for(face_ids, keys, register, allow_restricted=args.allow_restricted)
    for w in policy.warnings:
        print(f"seke export: warning: {w}", file=sys.stderr)
    withheld = withheld_images(policy, faces)
    if args.overwrite:
        for part in EXPORT_PARTS:
            target = out / part
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Any] = {}
    layouts: list[str] = []
    if args.format in ("llava", "all"):
        done["llava"] = exports.export_llava(feid, out / "llava", withheld=withheld)
        layouts.append("llava")
    if args.format in ("sharegpt", "all"):
        done.update({f"sharegpt.{k}": v for k, v in exports.export_sharegpt(feid, out / "sharegpt", withheld=withheld).items()})
        layouts.append("sharegpt")
    if args.format in ("hf", "all"):
        done["hf.feid"] = exports.export_hf_parquet(feid, out / "hf", "feid", "train", withheld=withheld)
        if feab.height:
            done["hf.feab"] = exports.export_hf_parquet(feab, out / "hf", "feab", "test", withheld=withheld)
        layouts.append("hf")
    versions = {t: {"table_uri": f"{args.lake}/{t}", "version": v} for t, v in used.items()}
    (out / "lake_versions.json").write_text(json.dumps(versions, indent=1))
    facts = gather_facts(Lake(args.lake), feid, feab if layouts.count("hf") else None, policy, register, versions)
    for layout in layouts:
        folder = out / layout
        configs = exports.hf_configs(folder) if layout == "hf" else None
        (folder / "README.md").write_text(render_card(facts, configs, layout), encoding="utf-8")
        (folder / "LICENSE.md").write_text(licence_file(facts), encoding="utf-8")
        done[f"{layout}.card"] = folder / "README.md"
    _pin_used(args.lake, used, f"export:{out.resolve()}")
    print(f"{feid.height} FEID records of {feid['face_id'].n_unique()} faces exported "
          f"(FEID version {feid_version}" + (f", FEAB version {used['feab']}" if used.get("feab") is not None else "")
          + "):")
    for k, v in done.items():
        print(f"  {k}: {v if not isinstance(v, list) else ', '.join(map(str, v))}")
    if facts.restricted_sources:
        print(f"restricted sources: {', '.join(facts.restricted_sources)}; "
              + (f"{len(withheld)} faces' images withheld (ids and relative paths written instead)"
                 if withheld else "images embedded because of --allow-restricted: do not publish this copy"))
    if args.push:
        return _push(args, out, policy, facts)
    return 0


def _push(args: argparse.Namespace, out: Path, policy: Any, facts: Any) -> int:
    from seke.hub import push, push_plan

    if "hf" not in [p.name for p in out.iterdir()]:
        print("seke export: --push uploads the Hugging Face layout: use --format hf or all", file=sys.stderr)
        return 2
    if policy.allow_restricted and facts.restricted_sources:
        print(f"seke export: refusing to push: the export embeds images of restricted sources "
              f"({', '.join(facts.restricted_sources)}); export without --allow-restricted", file=sys.stderr)
        return 2
    plan = push_plan(out / "hf", args.push, private=not args.public,
                     commit_message=f"SEKE export (FEID/FEAB lake versions {json.dumps(facts.lake_versions)})")
    print(plan.describe())
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    info = push(plan)
    print(f"pushed to https://huggingface.co/datasets/{args.push}: {info}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from seke import evaluate as ev
    from seke.lake import Lake

    lake = Lake(args.lake)
    extra = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    try:
        run = ev.run_evaluation(
            lake, lambda knowledge: ev.load_annotator(args.annotator, knowledge, seed=args.seed, **extra),
            feab_version=args.feab_version, source=args.source, batch=args.batch, limit=args.limit,
            model=args.model, run_id=args.run_id, n_samples=args.n_samples, batch_size=args.batch_size,
            store_run=not args.no_store,
            progress=lambda d, t: print(f"\r{d}/{t} faces", end="", file=sys.stderr))
    except ValueError as exc:
        print(f"seke evaluate: {exc}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    result = run.result
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    if run.commits:
        print(f"stored run {result.run_id} of {result.model}: {run.commits['evaluations']} "
              f"(FEAB version {run.feab_version}; knowledge {run.versions['knowledge']}, "
              f"prompt {run.versions['prompt']})")
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        for name, png in result.plots.items():
            target = Path(args.plots) / f"{ev.model_slug(result.model)}-{result.run_id}-{name}.png"
            target.write_bytes(png)
            print(f"plot: {target}")
    print(format_table(["metric", "human gold", "generated gold (agreement)", "own labels (self-agreement)"],
                       ev.subset_table(result)))
    table = ev.comparison_table(ev.read_evaluations(lake)) if not args.no_store else None
    if table is not None and table.height:
        print("\ncomparison (latest run per model):")
        print(format_table(table.columns, table.rows()))
    return 0


def main(argv: list[str] | None = None, extra_commands: dict[str, tuple[Any, Any]] | None = None) -> int:
    """Run the CLI. ``extra_commands`` maps a sub-command name to ``(add_parser(sub), handler(args))``:
    commands that need the Dagster layer (``ingest``) are added by :mod:`pipelines.cli`, so this
    module stays free of Dagster."""
    parser = argparse.ArgumentParser(prog="seke", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch-weights", help="download and sha256-check offline models and demo photos")

    def paths(p: argparse.ArgumentParser, db: bool = False) -> None:
        p.add_argument("--lake", default=default_lake_uri(), help="lake root or s3:// URI (env SEKE_LAKE_URI)")
        if db:
            p.add_argument("--db", default=default_db_path(), help="DuckDB file (env SEKE_DUCKDB_PATH)")

    p = sub.add_parser("sql", help="run SQL against the read-only DuckDB warehouse and print a table")
    p.add_argument("query", nargs="?", help="SQL text, a saved query name (see --list) or a .sql file")
    p.add_argument("--list", action="store_true", help="list saved queries in queries/")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--max-rows", type=int, default=200)
    p.add_argument("--build", action="store_true", help="(re)build the warehouse views first")
    paths(p, db=True)

    p = sub.add_parser("warehouse", help="(re)build the DuckDB file with a view per lake table")
    paths(p, db=True)

    p = sub.add_parser("export", help="FEID/FEAB as LLaVA, ShareGPT (LLaMA-Factory) and HF Parquet")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=("llava", "sharegpt", "hf", "all"), default="all")
    p.add_argument("--source")
    p.add_argument("--batch")
    p.add_argument("--origins", help="keep records whose origin is in this comma list, e.g. human,verified")
    p.add_argument("--feid-version", type=int, help="export this FEID table version (default: the latest)")
    p.add_argument("--feab-version", type=int, help="export this FEAB table version (default: the latest)")
    p.add_argument("--allow-restricted", action="store_true",
                   help="embed images whose licence forbids redistribution (a private copy; never pushed)")
    p.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    p.add_argument("--push", metavar="REPO_ID", help="upload the HF layout (+ card) to this Hub dataset repo")
    p.add_argument("--dry-run", action="store_true", help="with --push: list what would be uploaded, upload nothing")
    p.add_argument("--public", action="store_true", help="with --push: create the repo public (default private)")
    paths(p)

    p = sub.add_parser("evaluate", help="score an annotator on FEAB and store the run")
    p.add_argument("--annotator", default="offline",
                   help="offline | package.module:factory (e.g. seke.evaluate:constant_baseline)")
    p.add_argument("--checkpoint", help="passed to the factory as checkpoint=")
    p.add_argument("--model", help="name in the comparison table (default backend/model)")
    p.add_argument("--run-id")
    p.add_argument("--n-samples", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="evaluate only the first N faces")
    p.add_argument("--source")
    p.add_argument("--batch")
    p.add_argument("--plots", help="also write the PNG plots into this folder")
    p.add_argument("--feab-version", type=int, help="score on this FEAB table version (default: the latest)")
    p.add_argument("--no-store", action="store_true", help="do not write the run to the lake")
    paths(p)

    p = sub.add_parser("vacuum", help="delete lake files no table version within the retention "
                                      "window or pinned by an export/checkpoint/evaluation needs")
    p.add_argument("--retention-hours", type=int, default=168)
    p.add_argument("--table", action="append", help="only this table (repeatable; default: all)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    paths(p)

    for configure, _ in (extra_commands or {}).values():
        configure(sub)

    args = parser.parse_args(argv)
    if os.environ.get("SEKE_CACHE_DIR"):
        from seke.weights import use_cache_dir

        use_cache_dir(os.environ["SEKE_CACHE_DIR"])
    if args.command in (extra_commands or {}):
        return extra_commands[args.command][1](args)  # type: ignore[index]
    if args.command == "fetch-weights":
        from seke.weights import fetch_all

        fetch_all()
        return 0
    handlers = {"sql": _cmd_sql, "warehouse": _cmd_warehouse, "export": _cmd_export,
                "evaluate": _cmd_evaluate, "vacuum": _cmd_vacuum}
    return handlers[args.command](args)
