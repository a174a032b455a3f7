"""seke.scrub: no piece of 6+ characters of a secret survives, wherever it sits in the text."""

from __future__ import annotations

import pytest

from seke.scrub import MASK, ScrubbedError, scrub, scrub_exception

KEY = "sk-proj-Qm7ZxLw9VtR2pNb8KcYd4HsJf6GuAe1WoTi3"


def fragments(text: str, key: str = KEY, n: int = 6) -> list[str]:
    return [key[i:i + n] for i in range(len(key) - n + 1) if key[i:i + n] in text]


@pytest.mark.parametrize("text", [
    KEY,
    f"{KEY} is not a valid key",
    f"Incorrect API key provided: Bearer {KEY}. Check it.",
    f"invalid key {KEY[:12]}",                       # echoed cut at the end
    f"key {KEY[:10]}**** invalid",                   # partially masked by the server
    f"{KEY[5:23]}... (truncated)",                   # a middle piece
    "x" * 190 + KEY + "y" * 50,                      # long body, key after position 190
    f"{KEY}{KEY[:9]} twice {KEY[-7:]}",
    f'{{"error": {{"message": "bad key {KEY}", "type": "auth"}}}}',
])
def test_every_fragment_is_removed(text):
    out = scrub(text, [KEY])
    assert fragments(out) == []
    assert MASK in out


def test_text_around_the_key_is_kept_and_cut_after_scrub_stays_clean():
    text = "y" * 170 + KEY + " tail"
    out = scrub(text, [KEY])
    assert out == "y" * 170 + MASK + " tail"
    # scrub first, then cut: no cut of the clean text can create a fragment
    assert all(fragments(out[:n]) == [] for n in range(len(out)))
    # the other order is the bug this module exists for: a 12-character prefix survives
    assert fragments(text[: 170 + 12]) and scrub(text[: 170 + 12], [KEY]).endswith(MASK)


def test_short_pieces_placeholders_and_no_secrets_leave_text_alone():
    assert scrub(f"sk-pr and {KEY[:5]}", [KEY]) == f"sk-pr and {KEY[:5]}"   # < 6 characters
    assert scrub("model EMPTY answer", ["EMPTY", "", None]) == "model EMPTY answer"
    assert scrub("", [KEY]) == "" and scrub("text", []) == "text"
    assert scrub("pin 1234 and 1234", ["1234"]) == f"pin {MASK} and {MASK}"  # short secret: whole only


def test_several_secrets():
    other = "AKIAZZ9YY8XX7WW6"
    out = scrub(f"{KEY[:8]} / {other[4:12]}", [KEY, other])
    assert fragments(out) == [] and fragments(out, other) == []


def test_exceptions_and_their_causes_are_replaced_only_when_they_leak():
    clean = ValueError("nothing secret")
    assert scrub_exception(clean, [KEY]) is clean
    try:
        try:
            raise KeyError(f"upstream echoed {KEY[:14]}")
        except KeyError as inner:
            raise RuntimeError("batch upload failed") from inner
    except RuntimeError as exc:
        replaced = scrub_exception(exc, [KEY])
    assert isinstance(replaced, ScrubbedError)
    assert fragments(str(replaced)) == [] and "batch upload failed" in str(replaced)
