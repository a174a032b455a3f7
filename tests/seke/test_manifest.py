"""Manifest parsing: encodings, manifest-level problems, per-label validation, duplicate rows."""

import codecs

import pytest

from seke.manifest import parse_manifest


def _reasons(m) -> list[tuple[str, str]]:
    return [(i.item_id, i.reason) for i in m.issues]


def test_utf8_bom_is_stripped():
    m = parse_manifest(codecs.BOM_UTF8 + b"image,expression\na.png,anger\n")
    assert m.status == "ok" and m.rows["a.png"].expression == "anger" and m.issues == []
    assert m.healthy


def test_utf16_with_bom_is_decoded():
    m = parse_manifest("image,expression\na.png,fear\n".encode("utf-16"))
    assert m.rows["a.png"].expression == "fear" and m.encoding.startswith("utf-16")


def test_latin1_bytes_use_the_declared_fallback_with_a_warning():
    data = codecs.BOM_UTF8 + "image,expression,subject_id\ncafé.png,anger,José\n".encode("latin-1")
    m = parse_manifest(data)
    assert m.status == "ok" and m.encoding == "cp1252"
    assert m.rows["café.png"].subject_id == "José" and m.rows["café.png"].expression == "anger"
    assert _reasons(m) == [("manifest.csv", "manifest_encoding")]
    assert "0xe9" in m.issues[0].detail and not m.healthy


@pytest.mark.parametrize("data,why", [(b"", "empty"), (b"\n\n", "empty"),
                                      (b"file,expression\na.png,anger\n", "no 'image' column"),
                                      (b"image,expression,expression\na.png,anger,fear\n", "duplicate column"),
                                      (b"image\n\"" + b"x" * 200_000 + b"\"\n", "CSV")])
def test_manifest_level_problems_make_it_bad(data, why):
    m = parse_manifest(data)
    assert m.status == "bad" and m.rows == {} and why in m.problem
    assert _reasons(m) == [("manifest.csv", "bad_manifest")]


def test_header_only_manifest_is_fine_and_columns_are_case_insensitive():
    assert parse_manifest(b"image\n").status == "ok"
    m = parse_manifest(b" Image , Expression ,AU12\na.png,Happy,YES\n")
    assert m.rows["a.png"].expression == "happiness" and m.rows["a.png"].aus == (12,)


@pytest.mark.parametrize("valence,arousal", [("5", "0.1"), ("-3", "0.1"), ("NaN", "0.1"), ("0.1", "inf"),
                                             ("abc", "0.1"), ("0.2", "")])
def test_bad_valence_arousal_is_withheld_and_other_labels_kept(valence, arousal):
    m = parse_manifest(f"image,expression,valence,arousal\na.png,sadness,{valence},{arousal}\n".encode())
    row = m.rows["a.png"]
    assert row.expression == "sadness" and row.valence is None and row.arousal is None
    assert row.invalid == ("va",)
    assert [r for _, r in _reasons(m)] == ["bad_label"]
    assert "line 2" in m.issues[0].detail


def test_unknown_expression_is_withheld_not_dropped_silently():
    m = parse_manifest(b"image,expression,valence,arousal\na.png,joyful,0.5,0.5\nb.png,,0.1,0.1\n")
    assert m.rows["a.png"].expression is None and m.rows["a.png"].invalid == ("expression",)
    assert m.rows["a.png"].valence == 0.5
    assert m.rows["b.png"].invalid == ()  # an empty cell is unknown, not invalid
    assert _reasons(m) == [("a.png", "bad_label")] and "joyful" in m.issues[0].detail


@pytest.mark.parametrize("cell,present", [("1", True), ("yes", True), ("TRUE", True), ("Yes", True),
                                          ("1.0", True), ("0", False), ("no", False), ("False", False)])
def test_au_codes_accepted_explicitly(cell, present):
    m = parse_manifest(f"image,au1,au12\na.png,0,{cell}\n".encode())
    assert m.rows["a.png"].aus == ((12,) if present else ()) and m.issues == []


@pytest.mark.parametrize("cell", ["0.5", "2", "-1", "maybe", "y"])
def test_other_au_values_are_bad_labels(cell):
    m = parse_manifest(f"image,expression,au1,au12\na.png,happiness,1,{cell}\n".encode())
    row = m.rows["a.png"]
    assert row.aus is None and row.invalid == ("aus",) and row.expression == "happiness"
    assert _reasons(m) == [("a.png", "bad_label")] and f"au12={cell!r}" in m.issues[0].detail


def test_duplicate_rows_that_agree_merge():
    m = parse_manifest(b"image,expression,valence,arousal\na.png,anger,,\na.png,angry,-0.5,0.6\n")
    row = m.rows["a.png"]
    assert (row.expression, row.valence, row.arousal, row.invalid) == ("anger", -0.5, 0.6, ())
    assert m.issues == []


def test_duplicate_rows_that_conflict_withhold_only_the_conflict():
    m = parse_manifest(b"image,expression,valence,arousal,subject_id\n"
                       b"a.png,anger,0.1,0.1,s1\n./a.png,happiness,0.1,0.1,s2\n")
    row = m.rows["a.png"]
    assert row.expression is None and row.invalid == ("expression",)
    assert (row.valence, row.arousal) == (0.1, 0.1) and row.subject_id is None
    assert sorted(r for _, r in _reasons(m)) == ["conflicting_labels", "conflicting_labels"]
    detail = next(i.detail for i in m.issues if "expression" in i.detail)
    assert "line 2: 'anger'" in detail and "line 3: 'happiness'" in detail


# ---- subjects from file names -------------------------------------------------------------------

LFW = r"(?P<subject>.+)_\d+\.\w+"


def test_subject_from_name_fills_only_what_the_manifest_left_empty():
    from seke.manifest import KnownRow, subject_pattern, with_subject_from_name

    p = subject_pattern(LFW)
    assert with_subject_from_name(KnownRow(), "images/George_W_Bush_0003.jpg", p).subject_id == "George_W_Bush"
    assert with_subject_from_name(KnownRow(subject_id="S010"), "images/Dileep_33.jpg", p).subject_id == "S010"
    # the whole base name must match: a name without the number stays its own unit
    assert with_subject_from_name(KnownRow(), "images/facial-expressions_2868588k.jpg", p).subject_id is None
    assert with_subject_from_name(KnownRow(), "Dileep_33.jpg", None).subject_id is None
    # without a named group the first group is the subject
    assert with_subject_from_name(KnownRow(), "S010_004_17.png", subject_pattern(r"(S\d+)_.*")).subject_id == "S010"


@pytest.mark.parametrize("spec, problem", [("wild=(", "not a regular expression"),
                                           ("wild=.+_\\d+", "has no group"),
                                           ("(?P<subject>.+)_\\d+", "not source=regex")])
def test_bad_subject_patterns_are_refused_with_the_reason(spec, problem):
    from seke.manifest import parse_subject_patterns

    with pytest.raises(ValueError, match=problem):
        parse_subject_patterns(spec)


def test_subject_patterns_spec_names_sources():
    from seke.manifest import parse_subject_patterns

    assert parse_subject_patterns(f"wild={LFW}; other=(.+)-\\d+\\.png") == {"wild": LFW, "other": r"(.+)-\d+\.png"}
    assert parse_subject_patterns("none") == {} == parse_subject_patterns(" ")
