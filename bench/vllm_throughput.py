"""Throughput of the platform's VLLM path vs a bare async ``openai`` loop at the same concurrency.

Both paths talk to the same local fake OpenAI server (tests/fake_openai_server.py, started in
its own process with a fixed per-request latency) over real sockets with the real client, and
send the same requests: one chat completion per face with ``n`` samples, the face attached as a
base64 data URL and ``response_format=json_schema``.

* bare: ``AsyncOpenAI`` + ``asyncio.Semaphore(C)`` + ``json.loads`` of each choice.
* platform: :meth:`VLLMAnnotator.sample_batch` (sync wrapper, capability probe, budget checks,
  parsing/validation/normalisation to Labels, per-sample accounting, and the content-addressed
  cache flushed to a real Parquet lake before returning) with ``max_concurrency=C``.

Each repeat uses a fresh response cache (no hits) and the endpoint capabilities remembered from
a first "cold" run (as every step after an endpoint's first one does; the cold run, which pays
the capability probe's round-trip, is reported separately). Reports samples/s of both (median over repeats),
their ratio (target >= 0.90), the extra wall time per sample, CPU ms per sample of each path,
and the throughput of a fully cached re-run. Last line: ``RESULT source=simulated
data=synthetic:FACESxN throughput_ratio=… overhead_ms=… bare_samples_per_s=… platform_samples_per_s=…``
(the fake server's answers and generated faces; the bare loop is the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from PIL import Image  # noqa: E402

from seke.annotation import FaceItem, Labels, SampleRequest  # noqa: E402
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig, with_image  # noqa: E402
from seke.cache import CapabilityMemo, ResponseCache  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.lake import Lake  # noqa: E402
from seke.prompts import answer_json_schema, build_annotation_prompt, response_format  # noqa: E402
from tests.fake_openai_server import Behaviour, ServerProcess  # noqa: E402


def make_faces(n: int) -> list[FaceItem]:
    out = []
    for i in range(n):
        img = Image.new("L", (64, 64), (37 * i) % 256)
        img.putpixel((i % 64, (i // 64) % 64), 255)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(FaceItem(f"face{i}", buf.getvalue(), known=Labels(expression=None)))
    return out


def run_bare(base_url: str, requests: list[SampleRequest], concurrency: int) -> tuple[float, float, int]:
    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=2, timeout=60)
        sem = asyncio.Semaphore(concurrency)

        async def one(req: SampleRequest) -> int:
            messages = with_image(req.prompt.messages, req.face.image_png)
            rf = response_format(answer_json_schema(req.prompt.missing), "seke_annotation", "json_schema")
            async with sem:
                resp = await client.chat.completions.create(model="fake-vlm", messages=messages, n=req.n,
                                                            temperature=0.7, max_tokens=1200,
                                                            response_format=rf)
            return sum(1 for c in resp.choices if isinstance(json.loads(c.message.content or "{}"), dict))

        try:
            return sum(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            await client.close()

    c0, t0 = time.process_time(), time.perf_counter()
    ok = asyncio.run(main())
    return time.perf_counter() - t0, time.process_time() - c0, ok


def run_platform(base_url: str, requests: list[SampleRequest], concurrency: int,
                 lake_dir: str, caps_dir: str) -> tuple[float, float, int, VLLMAnnotator]:
    cfg = VLLMConfig(base_url, "fake-vlm", api_key="bench", max_concurrency=concurrency,
                     temperature=0.7, max_tokens=1200, price_input_per_1m=2.5, price_output_per_1m=10)
    c0, t0 = time.process_time(), time.perf_counter()
    ann = VLLMAnnotator(cfg, knowledge_v1(), ResponseCache(Lake(lake_dir), model="fake-vlm"),
                        CapabilityMemo(Lake(caps_dir)))
    out = ann.sample_batch(requests)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    ok = sum(s.ok for ss in out for s in ss)
    ann.close()
    return dt, dc, ok, ann


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=160)
    ap.add_argument("--n", type=int, default=3, help="samples per face (one request with n)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.5, help="server latency per request, s")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    k = knowledge_v1()
    faces = make_faces(args.faces)
    reqs = [SampleRequest(f, build_annotation_prompt(f.known, k), n=args.n) for f in faces]
    samples = args.faces * args.n
    with ServerProcess(Behaviour(latency_s=args.latency, record=False)) as server:
        url = server.base_url
        print(f"server {url} latency={args.latency*1000:.0f}ms faces={args.faces} n={args.n} "
              f"samples={samples} concurrency={args.concurrency} repeats={args.repeats}")
        ideal = samples / (-(-args.faces // args.concurrency) * args.latency)
        run_bare(url, reqs[: args.concurrency], args.concurrency)  # warm-up (imports, server)
        bare, plat = [], []
        last_lake = ""
        with tempfile.TemporaryDirectory() as tmp:
            caps = f"{tmp}/caps"
            # cold: the endpoint's first step ever (capability probe + empty cache)
            tcold, _, okc, ann = run_platform(url, reqs, args.concurrency, f"{tmp}/cold", caps)
            assert okc == samples and ann.stats.probe_calls >= 1
            print(f"cold first run (probe {ann.stats.probe_calls} call(s) + empty cache): "
                  f"{samples/tcold:.1f} samples/s")
            for r in range(args.repeats):  # interleaved so machine noise hits both paths
                tb, cb, okb = run_bare(url, reqs, args.concurrency)
                last_lake = f"{tmp}/lake{r}"
                tp, cp, okp, ann = run_platform(url, reqs, args.concurrency, last_lake, caps)
                assert okb == samples and okp == samples, (okb, okp)
                bare.append((tb, cb))
                plat.append((tp, cp))
                print(f"repeat {r}: bare {samples/tb:7.1f} samples/s (cpu {cb*1000/samples:.2f} ms/sample) | "
                      f"platform {samples/tp:7.1f} samples/s (cpu {cp*1000/samples:.2f} ms/sample, "
                      f"calls={ann.stats.calls} probes={ann.stats.probe_calls})")
            # fully cached re-run of the last repeat's lake
            tc, cc, okc, ann = run_platform(url, reqs, args.concurrency, last_lake, caps)
            assert okc == samples and ann.stats.calls == 0 and ann.stats.cache_hits == samples
        tb = statistics.median(t for t, _ in bare)
        tp = statistics.median(t for t, _ in plat)
        cb = statistics.median(c for _, c in bare) * 1000 / samples
        cp = statistics.median(c for _, c in plat) * 1000 / samples
        ratio = tb / tp
        overhead_ms = (tp - tb) * 1000 / samples
        print(f"ideal (latency-bound) {ideal:.1f} samples/s")
        print(f"bare async openai loop: {samples/tb:.1f} samples/s (median wall {tb:.3f}s), cpu {cb:.2f} ms/sample")
        print(f"platform VLLMAnnotator: {samples/tp:.1f} samples/s (median wall {tp:.3f}s), cpu {cp:.2f} ms/sample")
        print(f"throughput ratio platform/bare = {ratio:.3f} (target >= 0.90; steady state: endpoint "
              f"capabilities remembered in the lake, empty response cache)")
        print(f"cold first run incl. capability probe: ratio {tb/tcold:.3f}")
        print(f"request overhead: {overhead_ms:.3f} ms wall per sample, {cp - cb:.3f} ms extra cpu per sample")
        print(f"cached re-run: {samples/tc:.1f} samples/s, 0 calls, {samples} cache hits")
        print(f"RESULT source=simulated data=synthetic:{args.faces}x{args.n} throughput_ratio={ratio:.3f} "
              f"overhead_ms={overhead_ms:.3f} bare_samples_per_s={samples / tb:.1f} "
              f"platform_samples_per_s={samples / tp:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
