"""Shared helpers for annotator tests: tiny face PNGs and a fresh fake OpenAI server."""

import io

import pytest
from PIL import Image

from seke.annotation import FaceItem, Labels, SampleRequest
from seke.knowledge import knowledge_v1
from seke.prompts import build_annotation_prompt


def png(seed: int) -> bytes:
    img = Image.new("L", (48, 48), seed % 256)
    img.putpixel((seed % 48, 7), 255 - seed % 256)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def faces(n: int, known: Labels = Labels()) -> list[FaceItem]:
    return [FaceItem(f"face{i}", png(i + 1), known=known, source="test") for i in range(n)]


def requests(items, n: int = 3, first_index: int = 0, round_: int = 0):
    k = knowledge_v1()
    return [SampleRequest(f, build_annotation_prompt(f.known, k), n=n, first_index=first_index,
                          round=round_) for f in items]


@pytest.fixture
def knowledge():
    return knowledge_v1()
