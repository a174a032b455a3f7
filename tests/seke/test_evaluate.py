import json

import polars as pl
import pytest

from seke.annotation import Labels
from seke.annotators.simulated import SimulatedAnnotator
from seke.evaluate import (CallableAnnotator, comparison_table, constant_baseline, evaluate,
                           label_generators, load_annotator, png_markdown, read_evaluations,
                           store, subset_table)
from seke.feab import build_feab
from seke.knowledge import knowledge_v1
from seke.lake import Lake
from seke.warehouse import build_warehouse, connect_readonly
from tests.seke.products_fixtures import make_faces

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def feab():
    raw, labels = make_faces(n_subjects=12, per_subject=3, n_loose=40)
    items = build_feab(labels, raw, fraction=0.5)
    assert set(items["task"]) == {"expression", "va", "aus"}
    return items


def _gold(feab):
    g = {}
    for r in feab.iter_rows(named=True):
        d = g.setdefault(r["face_id"], {})
        if r["task"] == "expression":
            d["expression"] = r["gold_expression"]
        elif r["task"] == "va":
            d["va"] = (r["gold_valence"], r["gold_arousal"])
        else:
            d["aus"] = r["gold_aus"]
    return g


def _half_right(feab):
    """Right expression on faces whose id starts with 0-7, 'contempt' otherwise; VA = gold + 0.1;
    AUs exactly gold."""
    gold = _gold(feab)

    def predict(faces):
        out = []
        for f in faces:
            g = gold[f.face_id]
            e = g["expression"] if f.face_id[0] in "01234567" else "contempt"
            v, a = g.get("va", (0.0, 0.0))
            out.append(Labels(e, v + 0.1, a + 0.1, {au: 1.0 for au in g.get("aus") or []}))
        return out
    return CallableAnnotator(predict, model="half-right")


def test_known_answers(feab):
    res = evaluate(_half_right(feab), feab, run_id="r1")
    ex = feab.filter(pl.col("task") == "expression")
    right = [fid[0] in "01234567" or e == "contempt" for fid, e in ex.select("face_id", "gold_expression").iter_rows()]
    assert res.value("expression", "accuracy") == pytest.approx(sum(right) / len(right))
    assert res.value("expression", "coverage") == 1.0
    # the fixture's VA gold is generated-and-verified: reported as agreement, in its own subset
    assert res.value("va", "rmse_valence") is None
    assert res.value("va", "rmse_valence", subset="generated") == pytest.approx(0.1)
    assert res.value("va", "rmse_arousal", subset="generated") == pytest.approx(0.1)
    va = feab.filter(pl.col("task") == "va")["gold_valence"].to_numpy()
    var = va.var()
    assert res.value("va", "ccc_valence", subset="generated") == pytest.approx(2 * var / (2 * var + 0.01))
    assert res.value("aus", "mean_f1") == pytest.approx(1.0)
    # one-hot answers: confidence 1 everywhere, so ECE = 1 - accuracy and Brier = 1 - accuracy
    acc = res.value("expression", "accuracy")
    assert res.value("expression", "ece") == pytest.approx(1 - acc)
    assert res.value("expression", "brier") == pytest.approx(1 - acc)
    cm = json.loads(res.metrics.filter((pl.col("metric") == "confusion_matrix") & (pl.col("subset") == "human"))["detail"][0])
    assert sum(map(sum, cm["matrix"])) == ex.height
    assert res.plots["confusion_matrix"].startswith(PNG_MAGIC)
    assert res.plots["va_scatter"].startswith(PNG_MAGIC)
    assert png_markdown(res.plots["va_scatter"], "va").startswith("![va](data:image/png;base64,iVBOR")
    # accuracy exists against human gold only; no subset mixes human and generated gold
    assert set(res.metrics["subset"]) <= {"human", "generated", "self_agreement"}
    assert res.metrics.filter((pl.col("metric") == "accuracy") & (pl.col("subset") != "human")).height == 0


def test_failing_items_lower_coverage_not_the_run(feab):
    faces = feab["face_id"].unique().sort().to_list()
    bad = set(faces[:3])
    inner = _half_right(feab)

    def predict(batch):
        if any(f.face_id in bad for f in batch):
            raise ConnectionError("endpoint hiccup")
        return inner.predict(batch)
    res = evaluate(CallableAnnotator(predict, model="flaky"), feab, batch_size=8)
    errors = res.items.filter(pl.col("error").is_not_null())
    assert set(errors["face_id"]) == bad
    assert "ConnectionError" in errors["error"][0]
    ex = feab.filter(pl.col("task") == "expression")
    n_bad = ex.filter(pl.col("face_id").is_in(list(bad))).height
    assert res.value("expression", "coverage") == pytest.approx(1 - n_bad / ex.height)


def test_gold_never_reaches_the_annotator(feab):
    seen = []

    def predict(faces):
        seen.extend(faces)
        return [Labels("neutral", 0.0, 0.0, {}) for _ in faces]
    evaluate(CallableAnnotator(predict), feab, plots=False)
    assert seen and all(f.known == Labels() for f in seen)
    assert len(seen) == feab["face_id"].n_unique()


def test_simulated_beats_constant_and_comparison_table(tmp_path, feab):
    gold = _gold(feab)
    truth = {f: Labels(g["expression"], *(g.get("va") or (None, None)),
                       {a: 1.0 for a in g.get("aus") or []}) for f, g in gold.items()}
    sim = SimulatedAnnotator(truth, seed=1, knowledge=knowledge_v1())
    lake = Lake(str(tmp_path / "lake"))
    r_sim = evaluate(sim, feab, n_samples=3, knowledge=knowledge_v1(), run_id="run-sim")
    r_const = evaluate(constant_baseline(), feab, run_id="run-const")
    assert r_sim.value("expression", "accuracy") > r_const.value("expression", "accuracy")
    store(lake, r_sim)
    store(lake, r_const)
    table = comparison_table(read_evaluations(lake))
    assert table["model"].to_list() == ["baseline/constant-neutral", "simulated/sim-v1"]
    assert "expression.accuracy" in table.columns and "aus.mean_f1" in table.columns
    # analysts see both runs through the warehouse, model and run as partition columns
    db = str(tmp_path / "wh.duckdb")
    assert "evaluations" in build_warehouse(lake, db)
    con = connect_readonly(db)
    rows = con.execute("SELECT model, run, round(value, 6) FROM evaluations WHERE metric='accuracy' "
                       "AND subset='human' ORDER BY model").fetchall()
    assert [r[:2] for r in rows] == [("baseline_constant-neutral", "run-const"), ("simulated_sim-v1", "run-sim")]
    assert rows[1][2] == pytest.approx(r_sim.value("expression", "accuracy"), abs=1e-6)


def test_load_annotator_specs():
    ann = load_annotator("seke.evaluate:constant_baseline", knowledge_v1(), expression="happiness")
    assert ann.model == "constant-happiness"
    with pytest.raises(ValueError, match="unknown annotator"):
        load_annotator("nonsense", knowledge_v1())
    with pytest.raises(TypeError):
        load_annotator("tests.seke.test_evaluate:_not_an_annotator", knowledge_v1())


def _not_an_annotator(**_):
    return object()


def test_empty_feab_is_a_clear_error():
    with pytest.raises(ValueError, match="FEAB is empty"):
        evaluate(constant_baseline(), pl.DataFrame({"face_id": []}))


def _echo(gold, model="labeller"):
    """An annotator answering exactly the FEAB gold: what the annotator that generated
    the gold does on its own labels."""
    def predict(faces):
        out = []
        for f in faces:
            g = gold[f.face_id]
            v, a = g.get("va", (0.0, 0.0))
            out.append(Labels(g.get("expression"), v, a, {au: 1.0 for au in g.get("aus") or []}))
        return out
    return CallableAnnotator(predict, backend="offline", model=model)


def test_own_labels_are_self_agreement_never_accuracy():
    """All gold generated by the evaluated annotator (the demo's case): no accuracy at all,
    only self-agreement; another model scored on the same gold gets 'generated' agreement."""
    raw, labels = make_faces(n_subjects=0, per_subject=0, n_loose=40)
    labels = labels.with_columns(pl.lit("verified").alias("expression_origin"),
                                 pl.lit("verified").alias("va_origin"), pl.lit("verified").alias("au_origin"))
    raw = raw.with_columns(pl.lit(None, pl.String).alias("known_expression"),
                           pl.lit(None, pl.List(pl.Int32)).alias("known_aus"))
    feab = build_feab(labels, raw, fraction=0.5)
    assert feab.height and feab["gold_flagged"].all()
    samples = pl.DataFrame({"face_id": feab["face_id"].unique().to_list()}).with_columns(
        pl.lit("offline").alias("backend"), pl.lit("labeller").alias("model"))
    gens = label_generators(samples)
    res = evaluate(_echo(_gold(feab)), feab, generators=gens, plots=False)
    assert res.value("expression", "accuracy") is None
    assert res.metrics.filter(pl.col("metric") == "accuracy").height == 0
    assert res.value("expression", "agreement", subset="self_agreement") == pytest.approx(1.0)
    assert res.value("expression", "ece", subset="self_agreement") is None
    assert set(res.metrics["subset"]) == {"self_agreement"}
    other = evaluate(_echo(_gold(feab), model="someone-else"), feab, generators=gens, plots=False)
    assert set(other.metrics["subset"]) == {"generated"}
    assert other.value("expression", "agreement", subset="generated") == pytest.approx(1.0)
    rows = {r[0]: r[1:] for r in subset_table(res)}
    assert rows["expression.accuracy | agreement"] == (None, None, pytest.approx(1.0))


def test_human_gold_is_the_default_and_unmixed(feab):
    res = evaluate(_half_right(feab), feab, plots=False)
    human = feab.filter(~pl.col("gold_flagged"))
    n_human_expr = human.filter(pl.col("task") == "expression").height
    row = res.metrics.filter((pl.col("subset") == "human") & (pl.col("metric") == "accuracy"))
    assert row["n_items"][0] == n_human_expr
    assert res.summary() == res.summary("human")
    assert "expression.agreement" in res.summary("generated")
