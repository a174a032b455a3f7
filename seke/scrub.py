"""Remove secrets (API keys) from any text before it is stored, logged or raised.

Why a module of its own: an endpoint may echo the request's key back in an error body, in a
refusal or in the answer itself, and servers often echo it *cut* (``sk-abc123…``). Replacing
only the whole key misses those fragments, and truncating a text before scrubbing it turns a
whole key into a fragment. So every path that lets server text into SEKE calls :func:`scrub`
first, on the full text, and only then truncates; :func:`scrub` removes every run of
:data:`MIN_FRAGMENT` or more characters that also occurs inside a secret (any prefix, suffix
or middle piece), not just the whole secret.

The secrets are passed in by the caller (the VLLM annotator has its key from its config): seke
never reads the environment.
"""

from __future__ import annotations

from typing import Iterable

#: Shortest piece of a secret that is removed when it shows up in a text.
MIN_FRAGMENT = 6
#: What a removed piece is replaced with.
MASK = "***"
#: Placeholder keys the SDK needs for keyless endpoints; they are not secrets.
NOT_SECRETS = frozenset({"", "EMPTY"})


def secret_list(secrets: Iterable[str | None]) -> tuple[str, ...]:
    """The real secrets among ``secrets`` (placeholders and empty values dropped)."""
    return tuple(s for s in secrets if s is not None and s not in NOT_SECRETS)


def scrub(text: str, secrets: Iterable[str | None], min_fragment: int = MIN_FRAGMENT) -> str:
    """``text`` with every piece of ``min_fragment``+ characters of any secret replaced by ``***``.

    A run of characters of length >= ``min_fragment`` occurs in a secret exactly when each of
    its windows of ``min_fragment`` characters does, so marking every matching window and
    merging the marks finds every fragment in one pass over ``text``. Secrets shorter than
    ``min_fragment`` are replaced only where they occur whole.
    """
    keys = secret_list(secrets)
    if not text or not keys:
        return text
    windows: set[str] = set()
    for key in keys:
        if len(key) < min_fragment:
            text = text.replace(key, MASK)
        else:
            windows.update(key[i:i + min_fragment] for i in range(len(key) - min_fragment + 1))
    if not windows:
        return text
    covered = [False] * len(text)
    hit = False
    for i in range(len(text) - min_fragment + 1):
        if text[i:i + min_fragment] in windows:
            hit = True
            for j in range(i, i + min_fragment):
                covered[j] = True
    if not hit:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def scrub_optional(text: str | None, secrets: Iterable[str | None]) -> str | None:
    """:func:`scrub` that passes ``None`` through (optional fields such as a refusal)."""
    return None if text is None else scrub(text, secrets)


class ScrubbedError(RuntimeError):
    """Stands in for an exception whose text (or whose cause's text) carried a secret."""


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)


def scrub_exception(exc: BaseException, secrets: Iterable[str | None]) -> BaseException:
    """``exc`` itself when no exception in its chain mentions a secret; otherwise a
    :class:`ScrubbedError` with the scrubbed text of the chain, to be raised ``from None`` so
    that neither Dagster's error serialization nor a traceback can show the original."""
    keys = secret_list(secrets)
    if not keys:
        return exc
    texts = [f"{type(e).__name__}: {e}" for e in _chain(exc)]
    clean = [scrub(t, keys) for t in texts]
    if clean == texts:
        return exc
    return ScrubbedError(" <- ".join(clean))
