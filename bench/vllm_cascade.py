"""Cost of the VLLM path at real-endpoint prices and rates: cascade, jury, RPM/TPM, estimate.

Everything goes over real sockets with the real ``openai`` client to the local OpenAI-protocol
server (tests/fake_openai_server.py, in-process), which simulates models of distinct noise
(``model_noise``: a model's belief about a face is wrong with that probability; its samples
stray with half of it; its verifier accepts a candidate iff it equals its own belief — so a
model verifying itself shares its blind spots). Ground truth is the human expression of dev
faces from ../shared/data (FER2013 ``train`` split; ``data=fer2013[train]:N``); without them it
exits 2, unless ``--simulated`` asks for synthetic faces (``data=synthetic:N``). Prices are per 1M tokens as published for gpt-4o-mini
and gpt-4o; tokens are the server's usage, counted by the provider's rule (tiktoken + tiles).

1. cascade (offline annotator [when the weights are there] -> mini -> big) vs big alone, both
   SV-UAMC with verification: cost per accepted face and accepted-label error (expression).
2. jury (big generates, mini... verifies) vs big self-verification: accepted error ratio.
3. 2,000 requests against an endpoint limited to RPM/TPM (scaled to finish in ~40 s):
   utilisation of the RPM limit in steady state and 429s after warm-up (first 5 %).
4. estimate: ``seke.estimate`` before a cascade run on faces B, with the history of a run on
   faces A, vs the run's actual USD (``estimate_error``); and ``estimate_error_in_sample``: the
   estimate for A+B from the history of A+B, which removes the luck of which faces escalate and
   leaves the estimator's own counting. Read ``estimate_error`` with the faces per stage printed
   above it: the big model costs ~13x the mini per face, and which faces escalate to it is
   luck at small sizes — with 120 faces per set (``--requests 200 --faces 120``, 2026-12-02) it
   saw 28 faces of A and 11 of B, which alone put the A->B figure 41 % off while the in-sample
   figure was 0.2 % off. The default is therefore 360 faces per set (about 75 s); only more
   faces make the A->B figure a measure of the estimator rather than of the draw.

Last line: ``RESULT source=… data=… cost_ratio=… accepted_error_delta=… jury_error_ratio=…
rpm_utilisation=… throttled_after_warmup=… estimate_error=… estimate_error_in_sample=…
big_alone_usd_per_accepted=… big_alone_error=…``: ``source=simulated`` (the models are the fake
server's; ``offline+simulated`` when the offline annotator heads the cascade) and the baseline
(the big model alone, self-verifying) beside the ratios.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
from PIL import Image  # noqa: E402

from seke.annotation import FaceItem, Labels, SampleRequest  # noqa: E402
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig  # noqa: E402
from seke.estimate import EstimateMember, History, estimate_run  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.pool import AnnotatorPool, PoolEntry, PoolMember  # noqa: E402
from seke.prompts import build_annotation_prompt  # noqa: E402
from seke.sv_uamc import SamplingConfig, run_sampling  # noqa: E402
from tests.fake_openai_server import EXPRESSIONS, Behaviour, FakeOpenAIServer  # noqa: E402

PRICES = {"mini": (0.15, 0.60), "big": (2.50, 10.00)}   # USD per 1M in/out (gpt-4o-mini, gpt-4o)
NOISE = {"sim-mini": 0.30, "sim-big": 0.08, "sim-judge": 0.10}
SHARED = ROOT.parent / "shared" / "data" / "fer2013"


def load_faces(n: int, offset: int = 0, simulated: bool = False) -> tuple[list[FaceItem], dict[str, str], str]:
    truth: dict[str, str] = {}
    faces: list[FaceItem] = []
    if not simulated:
        with open(SHARED / "manifest.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("split") == "train" and r.get("expression") in EXPRESSIONS]
        for r in rows[offset * 7: offset * 7 + n * 7: 7]:  # every 7th: a spread of classes
            img = Image.open(SHARED / r["image"]).convert("RGB")
            buf = io.BytesIO()
            img.resize((96, 96)).save(buf, "PNG")
            b = buf.getvalue()
            fid = hashlib.sha256(b).hexdigest()[:16]
            faces.append(FaceItem(fid, b, Labels(), source="fer2013"))
            truth[hashlib.sha256(b).hexdigest()] = r["expression"]
        return faces, truth, "fer2013[train]"
    for i in range(offset, offset + n):
        buf = io.BytesIO()
        Image.new("RGB", (96, 96), (i % 256, (7 * i) % 256, 99)).save(buf, "PNG")
        b = buf.getvalue()
        faces.append(FaceItem(f"s{i}", b, Labels(), source="synthetic"))
        truth[hashlib.sha256(b).hexdigest()] = EXPRESSIONS[i % len(EXPRESSIONS)]
    return faces, truth, "synthetic"


def vllm(srv: FakeOpenAIServer, model: str, price: str, **kw) -> VLLMAnnotator:
    pin, pout = PRICES[price]
    cfg = VLLMConfig(srv.base_url, model, api_key="bench", price_input_per_1m=pin, price_output_per_1m=pout,
                     max_concurrency=32, seed=0, max_tokens=600, capabilities="n,json_schema", **kw)
    return VLLMAnnotator(cfg, knowledge_v1())


def offline_annotator():
    try:
        from seke.annotators.offline import OfflineAnnotator

        ann = OfflineAnnotator(knowledge_v1(), seed=0)
        return ann
    except Exception as exc:  # noqa: BLE001 - weights not fetched: the cascade starts at mini
        print(f"offline annotator unavailable ({type(exc).__name__}): cascade starts at the mini model")
        return None


def score(res, faces: list[FaceItem], truth: dict[str, str], extra_usd: float = 0.0) -> dict[str, float]:
    by_sha = {f.face_id: truth[hashlib.sha256(f.image_png).hexdigest()] for f in faces}
    acc = [r for r in res.labels if r["status"] == "accepted" and r["expression"]]
    wrong = sum(r["expression"] != by_sha[r["face_id"]] for r in acc)
    usd = sum(s["cost_usd"] or 0.0 for s in res.samples) + extra_usd
    return {"accepted": len(acc), "error": wrong / len(acc) if acc else 1.0, "usd": usd,
            "usd_per_accepted": usd / len(acc) if acc else float("inf"),
            "coverage": len(acc) / len(faces)}


def verify_usd(*anns: VLLMAnnotator) -> float:
    """Verification is not in mc_samples: take it from the annotators' own accounting."""
    return 0.0  # filled from stats below (total minus samples)


def run_set(faces, prompts, annotator, cfg):
    return run_sampling(faces, prompts, annotator, knowledge_v1(), cfg)


def total_cost(*anns) -> float:
    return sum(a.stats.cost_usd for a in anns if hasattr(a, "stats"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=360, help="faces per set (A and B)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rpm", type=float, default=3000.0)
    ap.add_argument("--simulated", action="store_true",
                    help="synthetic faces and truth instead of FER2013 train faces (RESULT data=synthetic)")
    args = ap.parse_args(argv)
    if not args.simulated and not (SHARED / "manifest.csv").exists():
        print(f"no data: {SHARED}/manifest.csv not found; pass --simulated for synthetic faces", file=sys.stderr)
        return 2
    k = knowledge_v1()
    faces, truth, data = load_faces(args.faces, simulated=args.simulated)
    faces_b, truth_b, _ = load_faces(args.faces, offset=args.faces, simulated=args.simulated)
    data = f"{data}:{len(faces) + len(faces_b)}"
    truth_all = {**truth, **truth_b}
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces + faces_b}
    cfg = SamplingConfig()
    behaviour = Behaviour(record=False, usage_rule="openai", truth=truth_all, model_noise=NOISE)
    off = offline_annotator()
    with FakeOpenAIServer(behaviour) as srv:
        # ---- 1. baseline: the expensive model alone, self-verifying
        big = vllm(srv, "sim-big", "big")
        t0 = time.time()
        base = run_set(faces, prompts, big, cfg)
        base_s = score(base, faces, truth)
        base_usd = total_cost(big)
        big.close()
        # ---- cascade: offline -> mini -> big
        mini, big2 = vllm(srv, "sim-mini", "mini"), vllm(srv, "sim-big", "big")
        members = ([PoolEntry("offline", off, unit_cost=0.0)] if off is not None else []) + [
            PoolEntry("mini", mini, unit_cost=PoolMember("m", price_input_per_1m=0.15, price_output_per_1m=0.6).unit_cost()),
            PoolEntry("big", big2, unit_cost=PoolMember("b", price_input_per_1m=2.5, price_output_per_1m=10).unit_cost())]
        casc = run_set(faces, prompts, AnnotatorPool(members, "cascade"), cfg)
        casc_s = score(casc, faces, truth)
        casc_usd = total_cost(mini, big2)
        print(f"[1] {len(faces)} faces ({data}), {time.time() - t0:.1f}s")
        print(f"    big alone : accepted {base_s['accepted']:4d} error {base_s['error']:.3f} "
              f"USD {base_usd:.4f} per accepted {base_usd / max(1, base_s['accepted']):.6f}")
        print(f"    cascade   : accepted {casc_s['accepted']:4d} error {casc_s['error']:.3f} "
              f"USD {casc_usd:.4f} per accepted {casc_usd / max(1, casc_s['accepted']):.6f} "
              f"produced_by {casc.stats['produced_by']}")
        print(f"    cross-check: {casc.stats['check_calls']} check calls; per stage "
              + "; ".join(f"{n}: checks {m['check_calls']}, disagreed {m['check_disagreed']}"
                          for n, m in casc.stats['pool'].items()))
        cost_ratio = (casc_usd / max(1, casc_s["accepted"])) / (base_usd / max(1, base_s["accepted"]))
        err_delta = (casc_s["error"] - base_s["error"]) * 100
        # the same cascade without the offline first stage (mini -> big)
        mini3, big3 = vllm(srv, "sim-mini", "mini"), vllm(srv, "sim-big", "big")
        c2 = run_set(faces, prompts, AnnotatorPool([PoolEntry("mini", mini3, unit_cost=0.001),
                                                    PoolEntry("big", big3, unit_cost=0.01)], "cascade"), cfg)
        c2_s, c2_usd = score(c2, faces, truth), total_cost(mini3, big3)
        print(f"    mini->big : accepted {c2_s['accepted']:4d} error {c2_s['error']:.3f} "
              f"USD {c2_usd:.4f} per accepted {c2_usd / max(1, c2_s['accepted']):.6f} "
              f"produced_by {c2.stats['produced_by']} -> cost_ratio "
              f"{(c2_usd / max(1, c2_s['accepted'])) / (base_usd / max(1, base_s['accepted'])):.3f} "
              f"error_delta {(c2_s['error'] - base_s['error']) * 100:+.2f}")
        mini3.close()
        big3.close()
        # ---- 2. jury vs self-verification (same generator)
        gen, judge = vllm(srv, "sim-big", "big"), vllm(srv, "sim-judge", "big")
        jury = run_set(faces, prompts, AnnotatorPool([PoolEntry("big", gen, unit_cost=1.0),
                                                      PoolEntry("judge", judge, unit_cost=2.0)], "jury"), cfg)
        jury_s = score(jury, faces, truth)
        jury_ratio = jury_s["error"] / base_s["error"] if base_s["error"] else float("nan")
        print(f"[2] jury      : accepted {jury_s['accepted']:4d} error {jury_s['error']:.3f} "
              f"(self-verification {base_s['error']:.3f}) verified_by {jury.stats['verified_by']} "
              f"coverage {jury_s['coverage']:.2f} (self {base_s['coverage']:.2f})")
        # ---- 4. estimate on faces B from the history of the cascade on faces A
        hist = History.from_frames(pl.DataFrame(casc.samples), pl.DataFrame(casc.labels))
        est_members = ([EstimateMember("offline", off.model, kind="offline")] if off is not None else []) + [
            EstimateMember("mini", "sim-mini", 0.15, 0.6), EstimateMember("big", "sim-big", 2.5, 10.0)]
        est = estimate_run(faces_b, prompts, est_members, cfg, hist, "cascade")
        mini_b, big_b = vllm(srv, "sim-mini", "mini"), vllm(srv, "sim-big", "big")
        mb = ([PoolEntry("offline", off, unit_cost=0.0)] if off is not None else []) + [
            PoolEntry("mini", mini_b, unit_cost=0.001), PoolEntry("big", big_b, unit_cost=0.01)]
        casc_b = run_sampling(faces_b, prompts, AnnotatorPool(mb, "cascade"), k, cfg)
        actual_b = total_cost(mini_b, big_b)
        est_err = abs(est.usd - actual_b) / actual_b if actual_b else float("nan")
        # the same arithmetic without the luck of the draw: history and target are the same faces
        # (A and B), so only the estimator's own counting (rounds, tokens, prices) can be off
        hist_ab = History.from_frames(pl.DataFrame(casc.samples + casc_b.samples),
                                      pl.DataFrame(casc.labels + casc_b.labels))
        est_ab = estimate_run(faces + faces_b, prompts, est_members, cfg, hist_ab, "cascade")
        actual_ab = casc_usd + actual_b
        est_err_in = abs(est_ab.usd - actual_ab) / actual_ab if actual_ab else float("nan")
        stages = lambda res: {n: m["faces"] for n, m in res.stats["pool"].items()}  # noqa: E731
        print(f"[4] estimate  : ${est.usd:.4f} vs actual ${actual_b:.4f} (error {est_err:.1%}); "
              f"encoding {est.encoding}")
        print(f"    faces per stage: A {stages(casc)}  B {stages(casc_b)}  (the big model costs "
              f"~${big_usd_per_face(casc, casc_b):.4f} per face it sees: one face more or less moves the total)")
        print(f"    in-sample : ${est_ab.usd:.4f} vs actual ${actual_ab:.4f} on A+B (error {est_err_in:.1%})")
        for a in (mini, big2, gen, judge, mini_b, big_b):
            a.close()
    # ---- 3. rate limits: 2,000 requests against an RPM/TPM-limited endpoint
    tpm = args.rpm * 1700
    lim = Behaviour(record=False, usage_rule="openai", rpm=args.rpm, tpm=tpm, latency_s=0.05)
    reqs_faces = [FaceItem(f"r{i}", _png(i), Labels()) for i in range(args.requests)]
    with FakeOpenAIServer(lim) as srv:
        ann = VLLMAnnotator(VLLMConfig(srv.base_url, "gpt-4o", api_key="bench", max_concurrency=64, max_retries=5,
                                       max_tokens=300, capabilities="json_schema", rpm=args.rpm, tpm=tpm),
                            k)
        t0 = time.monotonic()
        out = ann.sample_batch([SampleRequest(f, build_annotation_prompt(f.known, k), 1) for f in reqs_faces])
        dt = time.monotonic() - t0
        ann.close()
        times = sorted(srv.admitted)
        warm = times[len(times) // 20]
        steady = [t for t in times if t >= warm]
        util = ((len(steady) - 1) / (steady[-1] - steady[0]) * 60 / args.rpm) if len(steady) > 1 else 0.0
        throttled_after = sum(t >= warm for t in srv.throttled)
        ok = sum(s.ok for ss in out for s in ss)
    print(f"[3] {args.requests} requests, rpm {args.rpm:g} tpm {tpm:g}: {dt:.1f}s, ok {ok}, "
          f"429s {len(srv.throttled)} (after warm-up {throttled_after}), utilisation {util:.3f}")
    print(f"baseline (big alone): usd_per_accepted={base_usd / max(1, base_s['accepted']):.6f} "
          f"accepted_error={base_s['error']:.3f} coverage={base_s['coverage']:.2f}")
    print(f"RESULT source={'offline+simulated' if off is not None else 'simulated'} data={data} "
          f"cost_ratio={cost_ratio:.3f} accepted_error_delta={err_delta:+.2f} "
          f"jury_error_ratio={jury_ratio:.3f} jury_coverage={jury_s['coverage']:.2f} rpm_utilisation={util:.3f} "
          f"throttled_after_warmup={throttled_after} estimate_error={est_err:.3f} "
          f"estimate_error_in_sample={est_err_in:.3f} "
          f"big_alone_usd_per_accepted={base_usd / max(1, base_s['accepted']):.6f} "
          f"big_alone_error={base_s['error']:.3f}")
    return 0


def big_usd_per_face(*runs) -> float:
    """Mean USD the big model cost per face it sampled, over ``runs`` (0 when it saw none)."""
    rows = [r for res in runs for r in res.samples if r["model"] == "sim-big"]
    n = len({r["face_id"] for r in rows})
    return sum(r["cost_usd"] or 0.0 for r in rows) / n if n else 0.0


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    img = Image.new("L", (48, 48), i % 256)
    img.putpixel((i % 48, (i // 48) % 48), 255)
    img.save(buf, "PNG")
    return buf.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
