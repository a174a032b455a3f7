"""A scriptable local server speaking the OpenAI chat-completions, files and batches protocol.

Why: the VLLM path must be tested over real sockets with the real ``openai`` client, including
the unpleasant cases (malformed JSON, refusals, 429 with ``retry-after``, 500s, timeouts,
servers without ``n`` or ``json_schema``), and benchmarked with a fixed latency. This server is
reusable by other tests and by ``bench/vllm_throughput.py``.

Usage in a test::

    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv:
        srv.script(["malformed", "good"])          # consumed by image-bearing chat requests
        client = openai.OpenAI(base_url=srv.base_url, api_key="k")

In its own process (timing-sensitive tests and benchmarks: no GIL shared with the client)::

    with ServerProcess(Behaviour(rpm=1200)) as srv:    # python -m tests.fake_openai_server --behaviour '{...}'
        ...                                            # srv.base_url, srv.throttled, srv.admitted

Scripted actions (one per chat request that carries an image; probes without an image and
requests after the script runs out get ``default_action``):

``good`` | ``fenced`` (good JSON in a code fence with chatter) | ``malformed`` (truncated JSON) |
``bad_values`` (valid JSON, invalid expression/VA) | ``refusal`` (text refusal) |
``refusal_field`` (``message.refusal`` set, content null) | ``("status", code, headers)`` |
``("status", code, headers, message)`` (error body with that message, e.g. one echoing the key) |
``("sleep", seconds)`` (answers good after sleeping: the client should time out) |
``("text", content)`` (exact content for every choice).

Batch jobs (``/v1/files`` + ``/v1/batches``, OpenAI's semantics): a job is processed when it
has been polled ``batch_polls_until_done`` times. ``script_batches`` queues one plan per job
created, to simulate what real jobs do at their worst:

``{"expire_after": m}`` — the completion window runs out after ``m`` lines: status
``expired``, the first ``m`` answers in the output file, the rest in the error file with code
``batch_expired`` (never processed, never billed); ``{"drop_every": k}`` — a partial output
file: every ``k``-th line (the k-th, 2k-th, ...) is missing from both files (never processed);
``{"status": "failed"}`` — validation failed, nothing processed, no files; ``{"never": True}``
— stays ``in_progress`` until cancelled (``POST /v1/batches/{id}/cancel``).

``billed`` lists every request the server answered and would charge for (online chat
requests with a 200, and processed batch lines), so a test can prove that nothing is paid
twice: :func:`request_identity` names a request by what determines its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import signal
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

EXPRESSIONS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
_VA = {"neutral": (0.0, 0.0), "happiness": (0.8, 0.5), "sadness": (-0.6, -0.3),
       "surprise": (0.3, 0.7), "fear": (-0.6, 0.6), "disgust": (-0.6, 0.35),
       "anger": (-0.5, 0.6), "contempt": (-0.45, 0.2)}
_AUS = {"neutral": (), "happiness": (6, 12), "sadness": (1, 4, 15), "surprise": (1, 2, 5, 26),
        "fear": (1, 2, 4, 5, 7, 20, 26), "anger": (4, 5, 7, 23), "disgust": (9, 15),
        "contempt": (12, 14)}
ALL_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27)


@dataclass
class Behaviour:
    """What the endpoint supports and how fast it is."""

    supports_n: bool = True
    n_unsupported_mode: str = "reject"     # reject (400) | ignore (returns one choice)
    supports_json_schema: bool = True
    supports_json_object: bool = True
    supports_logprobs: bool = True
    latency_s: float = 0.0
    required_api_key: str | None = None
    echo_key_in_401: bool = False          # 401 body quotes the presented key, OpenAI style (sk-abcdef****wxyz)
    batch_polls_until_done: int = 1        # retrieve calls before a batch completes
    supports_batch: bool = True            # False: /v1/files and /v1/batches answer 404 (vLLM, Ollama)
    default_action: Any = "good"
    record: bool = True                    # keep every request (tests); off for benchmarks
    rpm: float | None = None               # enforce requests/minute with 429 + retry-after
    tpm: float | None = None               # enforce tokens/minute (prompt + n*max_tokens, OpenAI's rule)
    rate_window_s: float = 1.0             # limits enforced per window (OpenAI quantizes per second)
    usage_rule: str = "legacy"             # legacy (200 + chars/40) | openai (tiktoken + image tiles)
    image_token_rule: str = "openai-tile"
    # simulated models (benchmarks): truth per image sha and a noise level per model name; a
    # model's belief about a face is wrong with probability noise (systematically: the next
    # class), each sample departs from the belief with probability noise / 2, and its
    # verification accepts a candidate iff it equals the verifier's own belief
    truth: dict[str, str] | None = None
    model_noise: dict[str, float] | None = None


def _u(*key: object) -> float:
    h = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def simulated_belief(image_sha: str, model: str, truth: str, noise: float) -> str:
    if _u(image_sha, model, "belief") < noise:
        return EXPRESSIONS[(EXPRESSIONS.index(truth) + 1) % len(EXPRESSIONS)]
    return truth


class RateBuckets:
    """Server-side leaky buckets: ``window_s`` seconds' worth of the per-minute limit."""

    def __init__(self, per_minute: float, window_s: float) -> None:
        self.capacity = per_minute * window_s / 60
        self.rate = per_minute / 60  # units leaking per second
        self.level = 0.0
        self.t = time.monotonic()

    def _leak(self) -> None:
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self.t) * self.rate)
        self.t = now

    def wait_for(self, amount: float) -> float:
        """0 if ``amount`` fits now (and takes it), else seconds until it would fit."""
        self._leak()
        amount = min(amount, self.capacity)
        if self.level + amount <= self.capacity + 1e-9:
            self.level += amount
            return 0.0
        return (self.level + amount - self.capacity) / self.rate

    def headers(self, kind: str, limit: float) -> dict[str, str]:
        self._leak()
        remaining = max(0, int(self.capacity - self.level))
        reset = self.level / self.rate
        return {f"x-ratelimit-limit-{kind}": str(int(limit)),
                f"x-ratelimit-remaining-{kind}": str(remaining),
                f"x-ratelimit-reset-{kind}": f"{reset:.3f}s"}


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    t: float


def request_identity(body: dict[str, Any]) -> str:
    """What determines an answer (messages, seed, n, temperature, model): two requests with the
    same identity buy the same sample(s) twice."""
    keep = {k: body.get(k) for k in ("model", "messages", "seed", "n", "temperature")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def image_sha_from_body(body: dict[str, Any]) -> str | None:
    """sha256 of the image sent as a data URL (None when the request carries no image)."""
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    if not url.startswith("data:"):
                        raise ValueError("image is not a data URL")
                    return hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
    return None


def truth_for(image_sha: str) -> str:
    """The fake model's 'true' expression for an image (deterministic from its bytes)."""
    return EXPRESSIONS[int(image_sha[:8], 16) % len(EXPRESSIONS)]


def _prompt_text(body: dict[str, Any]) -> str:
    parts = []
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(p.get("text", "") for p in c if p.get("type") == "text")
    return "\n".join(parts)


_FACT_EXPR = re.compile(r"Facts established by human annotators[^\n]*\n(?:- .*\n)*?- expression: (\w+)")
_AU_ROW = re.compile(r"^- (\w+): ((?:AU\d+ \([\d.]+\)(?:, )?)+)$", re.MULTILINE)
_VA_ROW = re.compile(r"^- (\w+): valence ([+-][\d.]+) ± [\d.]+, arousal ([+-][\d.]+)", re.MULTILINE)


_CAND_EXPR = re.compile(r"Candidate labels proposed for this face:\n(?:- .*\n)*?- expression: (\w+)")


def good_answer(image_sha: str, index: int, body: dict[str, Any], behaviour: "Behaviour | None" = None) -> str:
    """A knowledge-following model: keeps the human facts stated in the prompt, answers the
    expression 'seen' in the image (deterministic from its bytes) otherwise, and takes AUs and
    VA from the knowledge tables in the prompt (falling back to built-in prototypes)."""
    text = _prompt_text(body)
    sim = behaviour is not None and behaviour.truth is not None and image_sha in behaviour.truth
    belief = None
    if sim:
        model = str(body.get("model", ""))
        belief = simulated_belief(image_sha, model, behaviour.truth[image_sha],
                                  (behaviour.model_noise or {}).get(model, 0.0))
    if "Candidate labels" in text:
        cand = _CAND_EXPR.search(text)
        if sim and cand is not None and cand.group(1) != belief:
            return json.dumps({"verdict": "reject", "reasons": [f"looks like {belief}"], "corrected": None})
        return json.dumps({"verdict": "accept", "reasons": ["visible evidence matches"], "corrected": None})
    fact = _FACT_EXPR.search(text)
    expr = fact.group(1) if fact and fact.group(1) in _VA else (belief or truth_for(image_sha))
    if sim and not (fact and fact.group(1) in _VA):
        noise = (behaviour.model_noise or {}).get(str(body.get("model", "")), 0.0)
        salt = body.get("seed")
        if _u(image_sha, body.get("model"), salt, index, "sample") < noise / 2:
            expr = EXPRESSIONS[(EXPRESSIONS.index(expr) + 2 + int(_u(image_sha, salt, index) * 6)) % len(EXPRESSIONS)]
    au_table = {m.group(1): {int(a): float(p) for a, p in re.findall(r"AU(\d+) \(([\d.]+)\)", m.group(2))}
                for m in _AU_ROW.finditer(text)}
    present = ({a for a, p in au_table[expr].items() if p >= 0.5} if expr in au_table
               else set(_AUS[expr]))
    va_table = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in _VA_ROW.finditer(text)}
    v, a = va_table.get(expr, _VA[expr])
    jitter = ((int(image_sha[8:12], 16) + 97 * index) % 11 - 5) / 100.0
    probs = {e: (0.72 if e == expr else 0.04) for e in EXPRESSIONS}
    aus = {f"AU{au}": {"p": 0.9 if au in present else 0.05,
                       "intensity": "C" if au in present else "0"} for au in ALL_AUS}
    return json.dumps({"expression": expr, "expression_probs": probs,
                       "valence": round(max(-1, min(1, 0.8 * v + jitter)), 3),
                       "arousal": round(max(-1, min(1, 0.8 * a - jitter)), 3),
                       "aus": aus, "rationale": f"visible evidence typical of {expr}"})


def scripted_answer(expr: str) -> tuple[str, str]:
    """A ``("text", ...)`` action: a well-formed answer naming ``expr`` with its prototype VA and
    AUs (script a few different ones to make a face uncertain)."""
    v, a = _VA[expr]
    aus = {f"AU{au}": {"p": 0.9 if au in _AUS[expr] else 0.05, "intensity": "C" if au in _AUS[expr] else "0"}
           for au in ALL_AUS}
    return ("text", json.dumps({"expression": expr, "valence": v, "arousal": a, "aus": aus,
                                "rationale": f"looks like {expr}"}))


def _error(status: int, message: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": param, "code": None}}, status_code=status,
                        headers=headers)


class FakeOpenAIServer:
    """Runs the app with uvicorn on a loopback port in a background thread."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self._script: deque[Any] = deque()
        self._per_image: dict[str, deque[Any]] = {}
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._batch_polls: dict[str, int] = {}
        self._batch_plans: deque[dict[str, Any]] = deque()
        self._plan_of: dict[str, dict[str, Any]] = {}
        self.billed: list[tuple[str, dict[str, Any]]] = []   # ("online" | "batch", request body)
        b = self.behaviour
        self._rpm = RateBuckets(b.rpm, b.rate_window_s) if b.rpm else None
        self._tpm = RateBuckets(b.tpm, b.rate_window_s) if b.tpm else None
        self.admitted: list[float] = []        # monotonic times of chat requests let through
        self.throttled: list[float] = []       # monotonic times of 429s for RPM/TPM
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/files", self._files_create, methods=["POST"]),
            Route("/v1/files/{file_id}", self._files_get, methods=["GET"]),
            Route("/v1/files/{file_id}/content", self._files_content, methods=["GET"]),
            Route("/v1/batches", self._batches_create, methods=["POST"]),
            Route("/v1/batches/{batch_id}", self._batches_get, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self._batches_cancel, methods=["POST"]),
            Route("/_fake/stats", self._stats, methods=["GET"]),
        ])
        self._server = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- scripting -----------------------------------------------------------------------
    def script(self, actions: list[Any]) -> None:
        with self._lock:
            self._script.extend(actions)

    def script_for(self, image: bytes, actions: list[Any]) -> None:
        """Actions for requests carrying this image only (robust under concurrency)."""
        sha = hashlib.sha256(image).hexdigest()
        with self._lock:
            self._per_image.setdefault(sha, deque()).extend(actions)

    def script_batches(self, plans: list[dict[str, Any]]) -> None:
        """One plan per batch job created next (see the module docstring); ``{}`` is normal."""
        with self._lock:
            self._batch_plans.extend(plans)

    def billed_identities(self, with_image: bool = True) -> list[str]:
        """:func:`request_identity` of every billed request (image-bearing ones by default)."""
        return [request_identity(b) for _, b in self.billed
                if not with_image or image_sha_from_body(b) is not None]

    def _next_action(self, image_sha: str) -> Any:
        with self._lock:
            q = self._per_image.get(image_sha)
            if q:
                return q.popleft()
            return self._script.popleft() if self._script else self.behaviour.default_action

    def chat_requests(self, with_image: bool | None = None) -> list[Recorded]:
        out = [r for r in self.requests if r.path == "/v1/chat/completions"]
        if with_image is not None:
            out = [r for r in out if (image_sha_from_body(r.body) is not None) == with_image]
        return out

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=30, backlog=4096)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True, name="fake-openai")
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- handlers ------------------------------------------------------------------------
    def _auth_error(self, request: Request) -> Response | None:
        key = self.behaviour.required_api_key
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        if key is not None and presented != key:
            if self.behaviour.echo_key_in_401:
                return _error(401, f"Incorrect API key provided: {presented[:8]}****{presented[-4:]}. "
                                   "You can find your API key at https://platform.openai.com/account/api-keys.")
            return _error(401, "Incorrect API key provided.")
        return None

    async def _stats(self, request: Request) -> Response:
        """Admission record for a client in another process (:class:`ServerProcess`)."""
        with self._lock:
            return JSONResponse({"admitted": list(self.admitted), "throttled": list(self.throttled)})

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-vlm", "object": "model"}]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        if self.behaviour.record:
            self.requests.append(Recorded("/v1/chat/completions", body, dict(request.headers), time.time()))
        err = self._auth_error(request)
        if err is not None:
            return err
        limited = self._rate_limit(body)
        if limited is not None:
            return limited
        status, payload, headers = await self.complete(body)
        if status == 200 and self.behaviour.record:
            self.billed.append(("online", body))
        return JSONResponse(payload, status_code=status, headers={**headers, **self._rate_headers()})

    def request_tokens(self, body: dict[str, Any]) -> int:
        """What the request costs against TPM at admission: prompt + n * max_tokens."""
        n = int(body.get("n") or 1)
        return self.prompt_tokens(body) + n * int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        if self.behaviour.usage_rule == "openai":
            from seke.tokens import message_tokens  # the provider's published counting rule

            return message_tokens(body.get("messages", []), str(body.get("model", "gpt-4o")),
                                  rule=self.behaviour.image_token_rule)
        return 200 + len(json.dumps(body.get("messages", []))) // 40

    def completion_tokens(self, content: str | None, model: str) -> int:
        if self.behaviour.usage_rule == "openai":
            from seke.tokens import text_tokens

            return text_tokens(content or "", model) + 1
        return len(content or "") // 4 + 1

    def _rate_limit(self, body: dict[str, Any]) -> Response | None:
        if self._rpm is None and self._tpm is None:
            return None
        with self._lock:
            waits = []
            if self._rpm is not None:
                waits.append(self._rpm.wait_for(1))
            if self._tpm is not None and (not waits or waits[0] == 0):
                w = self._tpm.wait_for(self.request_tokens(body))
                if w > 0 and self._rpm is not None:  # give the request slot back
                    self._rpm.level = max(0.0, self._rpm.level - 1)
                waits.append(w)
            wait = max(waits)
            if wait <= 0:
                self.admitted.append(time.monotonic())
                return None
            self.throttled.append(time.monotonic())
        kind = "requests" if self._rpm is not None and waits[0] > 0 else "tokens"
        return _error(429, f"Rate limit reached for {kind} per min. Please try again in {wait:.3f}s.",
                      headers={"retry-after": str(max(1, round(wait))), "retry-after-ms": str(int(wait * 1000) + 1),
                               **self._rate_headers()})

    def _rate_headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self._rpm is not None:
            out.update(self._rpm.headers("requests", self.behaviour.rpm or 0))
        if self._tpm is not None:
            out.update(self._tpm.headers("tokens", self.behaviour.tpm or 0))
        return out

    async def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The chat-completions logic (shared by the HTTP route and batch processing)."""
        b = self.behaviour
        try:
            image_sha = image_sha_from_body(body)
        except ValueError as exc:
            return 400, {"error": {"message": str(exc)}}, {}
        n = int(body.get("n") or 1)
        if n > 1 and not b.supports_n and b.n_unsupported_mode == "reject":
            return 400, {"error": {"message": "n > 1 is not supported by this server", "param": "n"}}, {}
        if not b.supports_n:
            n = 1
        rf = (body.get("response_format") or {}).get("type")
        if rf == "json_schema" and not b.supports_json_schema:
            return 400, {"error": {"message": "response_format type json_schema is not supported",
                                   "param": "response_format"}}, {}
        if rf == "json_object" and not b.supports_json_object:
            return 400, {"error": {"message": "response_format type json_object is not supported",
                                   "param": "response_format"}}, {}
        if body.get("logprobs") and not b.supports_logprobs:
            return 400, {"error": {"message": "logprobs are not supported", "param": "logprobs"}}, {}
        action = self._next_action(image_sha) if image_sha is not None else "good"
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        if isinstance(action, tuple) and action[0] == "status":
            code = action[1]
            headers = (action[2] if len(action) > 2 else None) or {}
            message = action[3] if len(action) > 3 else f"scripted {code}"
            return code, {"error": {"message": message, "type": "server_error"}}, headers
        if isinstance(action, tuple) and action[0] == "sleep":
            await asyncio.sleep(action[1])
            action = "good"
        choices = []
        for i in range(n):
            refusal = None
            if image_sha is None:
                content = json.dumps({"ok": True}) if rf else "ok"
            elif action == "good":
                content = good_answer(image_sha, i, body, b)
            elif action == "fenced":
                content = "Here is my analysis:\n```json\n" + good_answer(image_sha, i, body) + "\n```\nHope this helps."
            elif action == "malformed":
                content = good_answer(image_sha, i, body)[:60]
            elif action == "bad_values":
                content = json.dumps({"expression": "bored", "valence": 7, "arousal": 0.2,
                                      "aus": {"AU99": 1}, "rationale": "?"})
            elif action == "refusal":
                content = "I'm sorry, but I can't help with analysing people's faces."
            elif action == "refusal_field":
                content, refusal = None, "I cannot assist with this request."
            elif isinstance(action, tuple) and action[0] == "text":
                content = action[1]
            else:
                raise ValueError(f"unknown scripted action {action!r}")
            choice: dict[str, Any] = {"index": i, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content, "refusal": refusal}}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": "{", "logprob": -0.01, "bytes": [123],
                                                   "top_logprobs": []}]}
            choices.append(choice)
        prompt_tokens = self.prompt_tokens(body)
        completion_tokens = sum(self.completion_tokens(c["message"]["content"], str(body.get("model", "")))
                                for c in choices)
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake-vlm"),
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, {}

    # ---- files + batches (minimal protocol) ----------------------------------------------
    def _no_batch(self) -> Response | None:
        if not self.behaviour.supports_batch:
            return _error(404, "Not Found")
        return None

    async def _files_create(self, request: Request) -> Response:
        err = self._no_batch() or self._auth_error(request)
        if err is not None:
            return err
        raw = await request.body()
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + raw)
        purpose, content, filename = "", b"", "upload.jsonl"
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "purpose":
                purpose = part.get_payload(decode=True).decode()
            elif name == "file":
                content = part.get_payload(decode=True)
                filename = part.get_filename() or filename
        self.requests.append(Recorded("/v1/files", {"purpose": purpose, "bytes": len(content)},
                                      dict(request.headers), time.time()))
        return JSONResponse(self._new_file(content, purpose, filename))

    def _new_file(self, content: bytes, purpose: str, filename: str) -> dict[str, Any]:
        fid = f"file-{uuid.uuid4().hex[:16]}"
        obj = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[fid] = {**obj, "content": content}
        return obj

    async def _files_get(self, request: Request) -> Response:
        f = self.files.get(request.path_params["file_id"])
        if f is None:
            return _error(404, "No such file")
        return JSONResponse({k: v for k, v in f.items() if k != "content"})

    async def _files_content(self, request: Request) -> Response:
        f = self.files.get(request.path_params["file_id"])
        if f is None:
            return _error(404, "No such file")
        return Response(f["content"], media_type="application/octet-stream")

    async def _batches_create(self, request: Request) -> Response:
        err = self._no_batch() or self._auth_error(request)
        if err is not None:
            return err
        body = await request.json()
        self.requests.append(Recorded("/v1/batches", body, dict(request.headers), time.time()))
        if body.get("input_file_id") not in self.files:
            return _error(400, "input file not found", "input_file_id")
        if body.get("endpoint") != "/v1/chat/completions":
            return _error(400, "unsupported endpoint", "endpoint")
        bid = f"batch_{uuid.uuid4().hex[:16]}"
        batch = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        self.batches[bid] = batch
        self._batch_polls[bid] = 0
        with self._lock:
            self._plan_of[bid] = self._batch_plans.popleft() if self._batch_plans else {}
        return JSONResponse(batch)

    async def _batches_get(self, request: Request) -> Response:
        err = self._no_batch()
        if err is not None:
            return err
        bid = request.path_params["batch_id"]
        batch = self.batches.get(bid)
        if batch is None:
            return _error(404, "No such batch")
        self._batch_polls[bid] += 1
        if batch["status"] in ("validating", "in_progress"):
            if self._plan_of.get(bid, {}).get("never"):
                batch["status"] = "in_progress"
            elif self._batch_polls[bid] >= self.behaviour.batch_polls_until_done:
                await self._run_batch(batch)
            else:
                batch["status"] = "in_progress"
        return JSONResponse(batch)

    async def _batches_cancel(self, request: Request) -> Response:
        bid = request.path_params["batch_id"]
        batch = self.batches.get(bid)
        if batch is None:
            return _error(404, "No such batch")
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelled"   # nothing was processed yet: no output file
        return JSONResponse(batch)

    async def _run_batch(self, batch: dict[str, Any]) -> None:
        plan = self._plan_of.get(batch["id"], {})
        if plan.get("status") == "failed":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "line": 1,
                                                            "message": "simulated validation failure"}]}
            return
        lines = [ln for ln in self.files[batch["input_file_id"]]["content"].decode().splitlines() if ln.strip()]
        expire_after, drop_every = plan.get("expire_after"), int(plan.get("drop_every") or 0)
        out, errs = [], []
        for i, line in enumerate(lines):
            req = json.loads(line)
            if drop_every and (i + 1) % drop_every == 0:
                continue                      # a partial output file: this line is simply absent
            if expire_after is not None and i >= expire_after:
                errs.append(json.dumps({"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": req["custom_id"],
                                        "response": None,
                                        "error": {"code": "batch_expired", "message": "This request could not "
                                                  "be executed before the completion window expired."}}))
                continue
            status, payload, _ = await self.complete(req["body"])
            if status == 200 and self.behaviour.record:
                self.billed.append(("batch", req["body"]))
            rec = {"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": req["custom_id"],
                   "response": {"status_code": status, "request_id": uuid.uuid4().hex[:8], "body": payload},
                   "error": None}
            (out if status == 200 else errs).append(json.dumps(rec))
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errs)}
        if out:
            batch["output_file_id"] = self._new_file(("\n".join(out) + "\n").encode(), "batch_output", "out.jsonl")["id"]
        if errs:
            batch["error_file_id"] = self._new_file(("\n".join(errs) + "\n").encode(), "batch_output", "err.jsonl")["id"]
        batch["status"] = "expired" if expire_after is not None and expire_after < len(lines) else "completed"


class ServerProcess:
    """The same server in a child process (``python -m tests.fake_openai_server``).

    Why: a server thread in the test process competes with the client for the GIL, so requests
    that the client spaced out can reach the server's rate buckets in a clump and draw a 429 that
    a real endpoint would not send (a CI run failed once that way). Timing-sensitive tests and
    benchmarks use this; scripted answers and recorded bodies need the in-process server.
    ``throttled``/``admitted`` are read from the child over HTTP (``/_fake/stats``).
    """

    def __init__(self, behaviour: Behaviour | None = None, start_timeout_s: float = 30.0) -> None:
        b = behaviour or Behaviour()
        self.behaviour = b
        self._args = ["--behaviour", json.dumps({**b.__dict__, "record": False})]
        self._timeout = start_timeout_s
        self.proc: Any = None
        self.base_url = ""

    def __enter__(self) -> "ServerProcess":
        import os
        import subprocess
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fake_openai_server", *self._args],
                                     cwd=root, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(root)})
        assert self.proc.stdout is not None
        ready = threading.Thread(target=self._read_ready, daemon=True)
        ready.start()
        ready.join(self._timeout)
        if not self.base_url:
            self.__exit__()
            raise RuntimeError(f"fake OpenAI server process did not start within {self._timeout:.0f}s")
        return self

    def _read_ready(self) -> None:
        line = self.proc.stdout.readline().strip()
        if line.startswith("READY "):
            self.base_url = line.split()[1]

    def _stats(self) -> dict[str, list[float]]:
        import urllib.request

        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/_fake/stats", timeout=10) as resp:
            return json.loads(resp.read())

    @property
    def throttled(self) -> list[float]:
        return self._stats()["throttled"]

    @property
    def admitted(self) -> list[float]:
        return self._stats()["admitted"]

    def __exit__(self, *exc: Any) -> None:
        import subprocess

        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # SIGTERM blocked or ignored as inherited from the caller
            self.proc.kill()
            self.proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--behaviour", default="{}", help="a Behaviour as JSON (what ServerProcess passes)")
    args = ap.parse_args()
    # a signal mask and ignored signals survive fork+exec: a caller that blocked or ignored
    # SIGTERM (some libraries do in their threads) would otherwise leave this server unkillable
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    srv = FakeOpenAIServer(Behaviour(**json.loads(args.behaviour))).start()
    print(f"READY {srv.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
