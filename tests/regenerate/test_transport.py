"""The transport (aiohttp, one session per server) against real HTTP servers started by the tests.

Each server is a small ASGI app under uvicorn in a thread of the test process (a real socket,
a real HTTP/1.1 stack); the app records every request it received (method, path, Host header,
the messages sent), so each test asserts what reached the server, not only what came back:
- a base URL with a path prefix keeps it (``http://127.0.0.1:PORT/gateway/model-a``);
- IPv6 ``[::1]``, with a bracketed Host header;
- https with a private CA trusted through ``SSL_CERT_FILE`` (and refused without it);
- proxy environment variables (``HTTP_PROXY`` to a counting proxy, ``NO_PROXY`` respected);
- chunked and gzip-encoded replies; a 204 reply (an error row at once, no hang);
- a server that closes idle keep-alive connections (no error, no POST sent twice).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from specforge_assets.regenerate.client import NoServerAvailable, ServerPool
from specforge_assets.regenerate.runner import OutputPaths, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings

from .conftest import make_rows, read_jsonl, write_rows

pytestmark = pytest.mark.server

PROBE = "Hello, how are you?"
# generous timeouts: every outcome below is decided by what the server does, never by a clock
FAST = dict(
    backoff_base_s=0.02,
    backoff_max_s=0.1,
    probe_interval_s=0.2,
    request_timeout_s=60.0,
    connect_timeout_s=10.0,
    progress_interval_s=60.0,
    all_down_timeout_s=10.0,
    max_attempts=2,
)


def settings(**kw) -> RegenSettings:
    return RegenSettings(**{"model": "m", "max_tokens": 16, "concurrency": 4, **FAST, **kw})


class ChatApp:
    """A minimal OpenAI-compatible chat server (ASGI). `reply`: "plain" (Content-Length),
    "chunked" (Transfer-Encoding: chunked, three pieces) or "gzip" (Content-Encoding: gzip).
    A last user message holding NO_CONTENT is answered with a bare 204."""

    def __init__(self, reply: str = "plain"):
        self.reply = reply
        self.seen: list[dict] = []  # every request: method, path, host, messages (chat only)
        self.lock = threading.Lock()

    def chats(self) -> list[list[dict]]:
        """Messages of every chat request but the start probe."""
        return [r["messages"] for r in self.seen if r["messages"] and r["messages"][-1]["content"] != PROBE]

    async def __call__(self, scope, receive, send):
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        messages = json.loads(body)["messages"] if body else None
        with self.lock:
            self.seen.append(
                {"method": scope["method"], "path": scope["path"], "host": headers.get("host"), "messages": messages}
            )
        if scope["method"] == "GET":
            await self._send(send, 200, json.dumps({"status": "ok", "data": [{"id": "m"}]}).encode())
            return
        last = messages[-1]["content"]
        if "NO_CONTENT" in last:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        out = json.dumps(
            {
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"answer to {last}"},
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            }
        ).encode()
        if self.reply == "chunked":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )  # no length: chunked
            third = len(out) // 3
            for piece in (out[:third], out[third : 2 * third]):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": out[2 * third :]})
        elif self.reply == "gzip":
            await self._send(send, 200, gzip.compress(out), [(b"content-encoding", b"gzip")])
        else:
            await self._send(send, 200, out)

    @staticmethod
    async def _send(send, status: int, body: bytes, extra=()):
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Served:
    def __init__(self, server, thread, port: int):
        self.server, self.thread, self.port = server, thread, port

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)


@pytest.fixture
def serve():
    """Factory: serve(app, host="127.0.0.1", **uvicorn options) -> Served (stopped at teardown)."""
    import uvicorn

    running: list[Served] = []

    def start(app, host: str = "127.0.0.1", **options) -> Served:
        config = uvicorn.Config(
            app,
            host=host,
            port=0,
            lifespan="off",
            log_level="warning",
            loop="asyncio",
            http="h11",
            access_log=False,
            **options,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        s = Served(server, thread, server.servers[0].sockets[0].getsockname()[1])
        running.append(s)
        return s

    yield start
    for s in running:
        s.server.should_exit = True
        s.thread.join(30)


def regenerate(tmp_path, addresses: list[str], rows: list[dict], **kw) -> tuple[dict, OutputPaths]:
    out = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    stats = run_regeneration(
        write_rows(tmp_path / "in.jsonl", rows), out, settings(**kw), addresses, log=lambda m: None
    )
    return stats, out


def assert_all_answered(rows: list[dict], out: OutputPaths) -> list[dict]:
    got = read_jsonl(out.success)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for src, row in zip(rows, got):
        users = [m["content"] for m in src["conversations"] if m["role"] == "user"]
        answers = [m["content"] for m in row["conversations"] if m["role"] == "assistant"]
        assert answers == [f"answer to {u}" for u in users]
    return got


# -- path prefix, IPv6 ------------------------------------------------------------------------
def test_a_path_prefixed_base_url_keeps_its_prefix(tmp_path, serve):
    app = ChatApp()
    srv = serve(app)
    rows = make_rows(12)
    for address in (f"http://127.0.0.1:{srv.port}/gateway/model-a", f"127.0.0.1:{srv.port}/gateway/model-a/v1/"):
        app.seen.clear()
        stats, out = regenerate(tmp_path / address.split(":")[-1].replace("/", "_"), [address], rows)
        assert stats["counts"]["success"] == 12
        assert {(r["method"], r["path"]) for r in app.seen} == {("POST", "/gateway/model-a/v1/chat/completions")}
        assert len(app.chats()) == sum(len([m for m in r["conversations"] if m["role"] == "user"]) for r in rows)
        got = assert_all_answered(rows, out)
        assert {tuple(r["regeneration"]["servers"]) for r in got} == {(f"127.0.0.1:{srv.port}/gateway/model-a",)}


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_ipv6_loopback_with_a_bracketed_host_header(tmp_path, serve):
    app = ChatApp()
    srv = serve(app, host="::1")
    rows = make_rows(6)
    stats, out = regenerate(tmp_path, [f"[::1]:{srv.port}"], rows)
    assert stats["counts"]["success"] == 6
    assert {r["host"] for r in app.seen} == {f"[::1]:{srv.port}"}
    got = assert_all_answered(rows, out)
    assert {r["regeneration"]["turns"][0]["server"] for r in got} == {f"[::1]:{srv.port}"}


# -- TLS with a private CA --------------------------------------------------------------------
@pytest.fixture
def private_ca(tmp_path):
    """(CA certificate, server certificate, server key) for 127.0.0.1, signed by a fresh CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl command not found: cannot make a test CA")
    d = tmp_path / "pki"
    d.mkdir()

    def ssl_cmd(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl_cmd(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=specforge test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    ssl_cmd(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    ssl_cmd(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    )
    return d / "ca.pem", d / "server.pem", d / "server.key"


def test_https_with_a_private_ca_from_ssl_cert_file(tmp_path, serve, private_ca, monkeypatch):
    ca, cert, key = private_ca
    app = ChatApp()
    srv = serve(app, ssl_certfile=str(cert), ssl_keyfile=str(key))
    url = f"https://127.0.0.1:{srv.port}"
    rows = make_rows(8)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # how a user trusts a private CA
    stats, out = regenerate(tmp_path / "trusted", [url], rows)
    assert stats["counts"]["success"] == 8
    assert_all_answered(rows, out)
    # without the CA the certificate is refused at the start probe, nothing is written
    monkeypatch.delenv("SSL_CERT_FILE")
    seen = len(app.seen)
    with pytest.raises(NoServerAvailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        regenerate(tmp_path / "untrusted", [url], rows)
    assert len(app.seen) == seen and not (tmp_path / "untrusted" / "out" / "regen.jsonl").exists()


# -- proxies from the environment -------------------------------------------------------------
class CountingProxy:
    """A forward HTTP proxy (absolute-form requests, one request per connection) that records
    the target of every request it relays."""

    def __init__(self):
        self.targets: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(30), "proxy did not start"
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _main(self):
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            lines = [l for l in head.split("\r\n")[1:] if l]
            length = sum(int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:"))
            body = await reader.readexactly(length)
            self.targets.append(target)
            u = urlsplit(target)
            keep = [
                l
                for l in lines
                if l.split(":", 1)[0].strip().lower() not in ("connection", "proxy-connection", "keep-alive")
            ]
            up_r, up_w = await asyncio.open_connection(u.hostname, u.port)
            up_w.write(
                f"{method} {u.path or '/'} HTTP/1.1\r\n".encode()
                + "".join(l + "\r\n" for l in keep).encode()
                + b"connection: close\r\n\r\n"
                + body
            )
            reply = await up_r.read()  # the upstream closes after its reply
            up_w.close()
            rhead, _, rbody = reply.partition(b"\r\n\r\n")
            rlines = [l for l in rhead.split(b"\r\n") if not l.lower().startswith(b"connection:")]
            writer.write(b"\r\n".join(rlines) + b"\r\nconnection: close\r\n\r\n" + rbody)
            await writer.drain()
        finally:
            writer.close()


def test_proxy_environment_variables_and_no_proxy(tmp_path, serve, monkeypatch):
    via_proxy, direct = ChatApp(), ChatApp()
    a, b = serve(via_proxy), serve(direct)
    for k in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    rows = make_rows(16)
    with CountingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "localhost")
        stats, out = regenerate(tmp_path, [f"127.0.0.1:{a.port}", f"localhost:{b.port}"], rows)
    assert stats["counts"]["success"] == 16
    assert_all_answered(rows, out)
    assert via_proxy.chats() and direct.chats()  # both servers took rows
    # every request to 127.0.0.1 went through the proxy, none to localhost (NO_PROXY)
    assert len(proxy.targets) == len(via_proxy.seen)
    assert {t.rsplit("/v1/", 1)[0] for t in proxy.targets} == {f"http://127.0.0.1:{a.port}"}


# -- reply framings ---------------------------------------------------------------------------
@pytest.mark.parametrize("reply", ["chunked", "gzip"])
def test_chunked_and_gzip_replies(tmp_path, serve, reply):
    app = ChatApp(reply)
    srv = serve(app)
    rows = make_rows(12)
    stats, out = regenerate(tmp_path, [f"127.0.0.1:{srv.port}"], rows)
    assert stats["counts"]["success"] == 12 and stats["retries"] == 0
    assert_all_answered(rows, out)


def test_a_204_reply_is_an_error_row_at_once(tmp_path, serve):
    app = ChatApp()
    srv = serve(app)
    rows = make_rows(4, turns=(1,))
    rows[2]["conversations"][-2]["content"] = "NO_CONTENT please"
    # the request timeout is far longer than the test: a client that waited for a body would hang
    stats, out = regenerate(tmp_path, [f"127.0.0.1:{srv.port}"], rows, request_timeout_s=3600.0)
    assert stats["counts"] == {"success": 3, "error": 1, "skipped": 0, "passthrough": 0}
    err = read_jsonl(out.error)[0]
    assert err["id"] == "r2" and err["error"].startswith("turn 1 of 1: HTTP 204 from 127.0.0.1:")
    assert stats["retries"] == 0 and stats["request_error_kinds"] == {"http_204": 1}
    assert len([m for m in app.chats() if "NO_CONTENT" in m[-1]["content"]]) == 1


# -- idle keep-alive connections closed by the server -----------------------------------------
def test_server_closing_idle_connections_costs_no_error_and_no_duplicate_post(serve):
    app = ChatApp()
    srv = serve(app, timeout_keep_alive=1)  # uvicorn closes a connection idle for 1 s

    def body(text: str) -> dict:
        return {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 4}

    async def go():
        pool = ServerPool([f"127.0.0.1:{srv.port}"], settings(max_attempts=3))
        try:
            await pool.start()
            for n in range(3):
                texts = [f"round {n} question {k}" for k in range(4)]
                replies = await asyncio.gather(*(pool.chat(body(t)) for t in texts))
                assert [r.content for r, _ in replies] == [f"answer to {t}" for t in texts]
                # the test, not a clock, decides: go on only once the server closed every connection
                deadline = time.monotonic() + 60
                while srv.open_connections():
                    assert time.monotonic() < deadline, "the server kept its idle connections"
                    await asyncio.sleep(0.05)
            return pool.retries, dict(pool.error_kinds)
        finally:
            await pool.close()

    retries, kinds = asyncio.run(go())
    assert retries == 0 and kinds == {}
    sent = [m[-1]["content"] for m in app.chats()]
    assert sorted(sent) == sorted(f"round {n} question {k}" for n in range(3) for k in range(4))  # each once


# -- concurrency ------------------------------------------------------------------------------
def test_concurrency_is_per_server_and_never_exceeded(tmp_path, stub_server):
    """`concurrency` is the most requests one server has in flight."""
    servers = [stub_server(latency_ms=40) for _ in range(2)]
    rows = make_rows(120, turns=(1,))
    stats, out = regenerate(tmp_path, [s.address for s in servers], rows, model="stub-model", concurrency=5)
    assert stats["counts"]["success"] == 120
    seen = [httpx.get(f"http://{s.address}/stats").json() for s in servers]
    assert sum(s["chat_requests"] for s in seen) == 120 + 2  # + one start probe each
    assert all(s["max_inflight"] == 5 for s in seen), seen
    assert {v["model"] for v in stats["servers"].values()} == {"stub-model"}
    assert stats["client"] == {"concurrency_per_server": 5}


# -- waiting for a slot while every server is out of rotation -----------------------------------
def test_waiters_while_every_server_is_down_time_out_or_cancel_without_hanging():
    """Rows waiting for a slot while no server is in rotation: each ends with NoServerAvailable
    after all_down_timeout_s, and cancelling waiters (what the runner does once one row hit that
    timeout) ends them all. Before, the wait ran in a task of its own (asyncio.wait_for on the
    condition) that could end up waiting for the condition's lock held by its cancelled caller:
    the run hung at exit under CPU load."""

    async def go():
        pool = ServerPool(["127.0.0.1:9"], settings(all_down_timeout_s=0.3, probe_interval_s=0.05, concurrency=1))
        try:
            for s in pool.servers:
                s.up = False  # out of rotation; no probe task scheduled, so it stays down
            timed_out = await asyncio.gather(*(pool._acquire(None, None) for _ in range(20)), return_exceptions=True)
            waiters = [asyncio.get_running_loop().create_task(pool._acquire(None, None)) for _ in range(20)]
            await asyncio.sleep(0.1)
            for w in waiters:
                w.cancel()
            # the test decides: every waiter must be finished once gather returns (no clock race)
            ended = await asyncio.gather(*waiters, return_exceptions=True)
            return timed_out, ended, pool._waiting
        finally:
            await pool.close()

    timed_out, ended, waiting = asyncio.run(go())
    assert all(isinstance(e, NoServerAvailable) for e in timed_out)
    assert all(isinstance(e, asyncio.CancelledError) for e in ended) and waiting == 0
