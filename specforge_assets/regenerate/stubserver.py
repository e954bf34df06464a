"""A tiny, fast OpenAI-compatible chat server for tests, benchmarks and dry runs — with faults.

Raw asyncio HTTP/1.1 (keep-alive), no framework, so its own capacity is far above what a
client needs to be measured against. Answers are deterministic: "echo <n>: <last user text>".
Content markers steer replies: OVERFLOW -> 400 context overflow, TRUNCATE -> finish_reason
"length", THINK -> a leftover <think> marker, EMPTY -> empty content.
GET /stats reports the chat requests seen and the most answered at once (with --latency-ms);
GET /requests lists the `messages` of every chat request, in arrival order (for tests).
Reply-shape quirks of real servers (`QUIRKS`), chosen by a `Q_<NAME>` marker in the last user
message, or for every request with --quirk NAME.
--api-key K requires `Authorization: Bearer K`; --basic-auth USER:PW requires HTTP Basic auth; --tls-cert/--tls-key serve https. Faults (counted over chat requests): --fail-every N (HTTP 500), --hang-every N (never answers),
--drop-every N (closes the connection without a response), --die-after N (the process exits),
--hang-limit N (at most N hangs); --hold-file PATH holds every chat request (after the first --hold-after N) while PATH exists; GET /stats counts each injected fault ("failed", "hung",
"dropped"). Latency: --latency-ms fixed, or log-normal with --latency-sigma (median
--latency-ms, capped at --latency-cap-ms, seeded by --seed; "slept_s" in /stats).

    python -m specforge_assets.regenerate.stubserver --port 0 [--latency-ms 50] [--fail-every 3]
prints "PORT <n>" on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys


class _State:
    def __init__(self, args):
        self.args = args
        self.n = 0
        self.inflight = 0  # chat requests being answered now
        self.max_inflight = 0
        self.requests: list = []  # messages of every chat request
        self.failed = self.hung = self.dropped = 0  # injected faults, as counted by the server
        self.slept_s = 0.0  # total latency slept over chat requests (--latency-ms / log-normal)
        import random

        self.rng = random.Random(args.seed)

    def latency_s(self) -> float:
        """This request's latency: fixed (--latency-ms), or log-normal (median --latency-ms,
        --latency-sigma) capped at --latency-cap-ms; seeded by --seed."""
        a = self.args
        if not a.latency_sigma:
            return a.latency_ms / 1000.0
        import math

        ms = a.latency_ms * math.exp(a.latency_sigma * self.rng.gauss(0.0, 1.0))
        return min(ms, a.latency_cap_ms or ms) / 1000.0


def _response(status: int, body: bytes, reason: str = "OK") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def _ok(message: dict, finish: str = "stop", model: str = "stub-model") -> dict:
    return {
        "id": "chatcmpl-q",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


# name -> (server it mimics, reply body). Sources: sgl-project/sglang#20786 and #4539 (reasoning
# parser leaves content null / moves the answer to reasoning_content), vLLM >= 0.16 (`reasoning`
# instead of `reasoning_content`), tool-call replies (content null + tool_calls), `transformers
# serve` (content as a list of parts), OpenAI-style gateways (error objects, `choices: []` from
# content filters).
QUIRKS = {
    "SGLANG_NULL_LENGTH": ("sglang", _ok({"content": None, "reasoning_content": "Let me think step by"}, "length")),
    "SGLANG_ALL_IN_REASONING": ("sglang", _ok({"content": "", "reasoning_content": "The answer is 42."})),
    "VLLM_REASONING_ONLY": ("vllm", _ok({"content": None, "reasoning": "Six times seven is forty-two."})),
    "VLLM_REASONING": ("vllm", _ok({"content": "Final answer: 42.", "reasoning": "Six times seven."})),
    "TOOL_CALL": (
        "vllm",
        _ok(
            {
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            "tool_calls",
        ),
    ),
    "WHITESPACE": ("sglang", _ok({"content": " \n\t "})),
    "EMPTY_STRING": ("sglang", _ok({"content": ""})),
    "PARTS": (
        "transformers",
        _ok({"content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": " Part two."}]}),
    ),
    "IMAGE_PART": (
        "transformers",
        _ok({"content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "x"}}]}),
    ),
    "NO_CHOICES": ("gateway", {"id": "x", "object": "chat.completion", "model": "m", "choices": [], "usage": {}}),
    "MISSING_CHOICES": ("gateway", {"id": "x", "object": "chat.completion", "model": "m"}),
    "ERROR_OBJECT": (
        "vllm",
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens.",
            "type": "BadRequestError",
            "code": 400,
        },
    ),
    "ERROR_NESTED": (
        "gateway",
        {"error": {"message": "upstream overloaded, try later", "type": "server_error", "code": 503}},
    ),
    # half of an emoji (a detokenizer that split a surrogate pair): valid JSON, not writable as UTF-8
    "LONE_SURROGATE": ("any", _ok({"content": "bad \ud83d"})),
    "REASONING_SURROGATE": ("sglang", _ok({"content": "fine", "reasoning_content": "hm \udc00 ok"})),
    "SURROGATE_MODEL": ("any", _ok({"content": "fine"}, finish="stop\ud83d", model="stub\udfff")),
    "ERROR_SURROGATE": ("gateway", {"error": {"message": "bad \ud800 request", "code": 400}}),
}


def _chat(req: dict, n: int, model: str, quirk: str = "") -> tuple[int, bytes]:
    msgs = req.get("messages") or []
    last = next((m.get("content", "") for m in reversed(msgs) if m.get("role") == "user"), "")
    last = last if isinstance(last, str) else json.dumps(last)
    name = quirk or next((q for q in QUIRKS if f"Q_{q}" in last), "")
    if name:
        return 200, json.dumps(QUIRKS[name][1]).encode()
    if "OVERFLOW" in last:
        return 400, json.dumps(
            {"error": {"message": "This model's maximum context length is 8 tokens", "type": "BadRequestError"}}
        ).encode()
    content = f"echo {len(msgs)}: {last}"
    finish = "stop"
    if "TRUNCATE" in last:
        finish = "length"
    if "THINK" in last:
        content = "<think>hmm</think> " + content
    if "EMPTY" in last:
        content = ""
    msg = {"role": "assistant", "content": content}
    if (req.get("chat_template_kwargs") or {}).get("enable_thinking"):
        msg["reasoning_content"] = f"reasoning about {last[:20]}"
    body = {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in msgs),
            "completion_tokens": len(content.split()),
            "total_tokens": 0,
        },
    }
    return 200, json.dumps(body).encode()


class _Proto(asyncio.Protocol):
    def __init__(self, state: _State):
        self.state = state
        self.buf = b""
        self.transport = None
        self.queue: asyncio.Queue | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc):
        self.task.cancel()

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            auth = ""
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v.strip())
                elif k == "authorization":
                    auth = v.strip()
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4 : head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length :]
            request_line = head.split("\r\n", 1)[0].split(" ", 2)
            if len(request_line) != 3:
                # not an HTTP/1.x request line (e.g. a chunked body this stub does not parse): hang
                # up, as a crashed connection did, without a traceback on the console
                self.transport.close()
                return
            method, path, _ = request_line
            self.queue.put_nowait((method, path, body, auth))

    async def _serve(self):
        a = self.state.args
        while True:
            method, path, body, auth = await self.queue.get()
            if a.basic_auth and auth != "Basic " + base64.b64encode(a.basic_auth.encode()).decode():
                self.transport.write(_response(401, b'{"error":"missing or wrong credentials"}', "Unauthorized"))
                continue
            if a.api_key and auth != f"Bearer {a.api_key}":
                self.transport.write(_response(401, b'{"error":"missing or wrong API key"}', "Unauthorized"))
                continue
            if path == "/stats" and method == "GET":
                st = self.state
                out = json.dumps(
                    {
                        "chat_requests": st.n,
                        "max_inflight": st.max_inflight,
                        "failed": st.failed,
                        "hung": st.hung,
                        "dropped": st.dropped,
                        "slept_s": st.slept_s,
                    }
                ).encode()
                self.transport.write(_response(200, out))
                continue
            if path == "/requests" and method == "GET":
                self.transport.write(_response(200, json.dumps(self.state.requests).encode()))
                continue
            if path in ("/health", "/v1/models") and method == "GET":
                out = json.dumps({"status": "ok", "data": [{"id": a.model}]}).encode()
                self.transport.write(_response(200, out))
                continue
            if path != "/v1/chat/completions" or method != "POST":
                self.transport.write(_response(404, b'{"error":"not found"}', "Not Found"))
                continue
            self.state.n += 1
            n = self.state.n
            if a.die_after and n > a.die_after:
                os._exit(3)
            while a.hold_file and n > a.hold_after and os.path.exists(a.hold_file):  # until the test removes it
                await asyncio.sleep(0.02)
            if a.latency_ms:
                st = self.state
                st.inflight += 1
                st.max_inflight = max(st.max_inflight, st.inflight)
                delay = st.latency_s()
                st.slept_s += delay
                try:
                    await asyncio.sleep(delay)
                finally:
                    st.inflight -= 1
            if a.drop_every and n % a.drop_every == 0:
                self.state.dropped += 1
                self.transport.abort()
                return
            if a.hang_every and n % a.hang_every == 0 and (not a.hang_limit or self.state.hung < a.hang_limit):
                self.state.hung += 1
                await asyncio.sleep(3600)
            if a.fail_every and n % a.fail_every == 0:
                self.state.failed += 1
                self.transport.write(_response(500, b'{"error":"injected failure"}', "Internal Server Error"))
                continue
            try:
                req = json.loads(body)
            except ValueError:
                self.transport.write(_response(400, b'{"error":"bad json"}', "Bad Request"))
                continue
            self.state.requests.append(req.get("messages"))
            code, out = _chat(req, n, a.model, a.quirk)
            self.transport.write(_response(code, out, "OK" if code == 200 else "Bad Request"))


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    state = _State(args)
    tls = None
    if args.tls_cert:
        import ssl

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key or None)
    server = await loop.create_server(lambda: _Proto(state), args.host, args.port, backlog=4096, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="stub-model")
    p.add_argument(
        "--latency-ms", type=float, default=0.0, help="latency of each chat reply (the median with --latency-sigma)"
    )
    p.add_argument("--latency-sigma", type=float, default=0.0, help="log-normal latency: sigma of log(latency)")
    p.add_argument("--latency-cap-ms", type=float, default=0.0, help="log-normal latency: the longest (0: no cap)")
    p.add_argument("--seed", type=int, default=0, help="seed of the log-normal latencies")
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument(
        "--hold-file",
        default="",
        help="while this file exists, chat requests wait (a test decides when they are answered)",
    )
    p.add_argument("--hold-after", type=int, default=0, help="with --hold-file: answer the first N chat requests")
    p.add_argument("--hang-every", type=int, default=0)
    p.add_argument("--hang-limit", type=int, default=0, help="hang at most this many requests (0: no limit)")
    p.add_argument("--drop-every", type=int, default=0)
    p.add_argument("--die-after", type=int, default=0)
    p.add_argument("--api-key", default="", help="require `Authorization: Bearer KEY` (401 otherwise)")
    p.add_argument("--basic-auth", default="", help="require HTTP Basic auth USER:PW (401 otherwise)")
    p.add_argument("--quirk", default="", choices=[""] + list(QUIRKS), help="answer every chat request with this quirk")
    p.add_argument("--tls-cert", default="", help="serve https with this PEM certificate (chain)")
    p.add_argument("--tls-key", default="", help="its private key (PEM), if not in --tls-cert")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.run(serve(args))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args))
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(0)


if __name__ == "__main__":
    main()
