"""The httpx transport end to end: https with certificate checks, and the lean network backend."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import httpx
import pytest

from specforge_assets.regenerate.client import HttpxShard, NoServerAvailable
from specforge_assets.regenerate.runner import OutputPaths, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings

from .conftest import make_rows, read_jsonl, write_rows

FAST = dict(backoff_base_s=0.02, backoff_max_s=0.1, probe_interval_s=0.2, request_timeout_s=5.0,
            connect_timeout_s=1.0, progress_interval_s=0.5, all_down_timeout_s=1.0, max_attempts=2)


@pytest.fixture
def tls_stub(tmp_path):
    """A stub server speaking https with a fresh self-signed certificate for 127.0.0.1."""
    if not shutil.which("openssl"):
        pytest.skip("openssl command not found: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "specforge_assets.regenerate.stubserver", "--port", "0",
                             "--tls-cert", str(cert), "--tls-key", str(key)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    yield f"https://127.0.0.1:{line.split()[1]}", cert
    proc.kill()
    proc.wait(5)


def test_https_server_with_a_trusted_certificate(tmp_path, tls_stub, monkeypatch):
    url, cert = tls_stub
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a user trusts a private CA
    rows = make_rows(40)
    out = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    stats = run_regeneration(write_rows(tmp_path / "in.jsonl", rows), out,
                             RegenSettings(model="stub-model", max_tokens=16, concurrency=4, **FAST), [url],
                             log=lambda m: None)
    assert stats["counts"]["success"] == 40
    got = read_jsonl(out.success)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert all(r["regeneration"]["turns"][0]["server"] == url.split("://")[1] for r in got)


def test_https_server_with_an_untrusted_certificate_is_refused(tmp_path, tls_stub, monkeypatch):
    url, _ = tls_stub
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    out = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    with pytest.raises(NoServerAvailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        run_regeneration(write_rows(tmp_path / "in.jsonl", make_rows(3)), out,
                         RegenSettings(model="stub-model", max_tokens=16, concurrency=2, **FAST), [url],
                         log=lambda m: None)
    assert not out.success.exists()


@pytest.mark.parametrize("lean", [True, False])
def test_shard_post_get_timeouts_and_keepalive(stub_server, lean):
    """HttpxShard on the lean asyncio backend behaves like httpx's own (anyio) backend."""
    import ssl

    ok, hang = stub_server(), stub_server(hang_every=1)

    async def go():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        a = HttpxShard(f"http://{ok.address}", {"content-type": "application/json"}, 2, 1.0, 0.5, verify=ctx, lean=lean)
        b = HttpxShard(f"http://{hang.address}", {"content-type": "application/json"}, 2, 1.0, 0.5, verify=ctx,
                       lean=lean)
        try:
            body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
            rs = await asyncio.gather(*(a.post("/v1/chat/completions", content=body) for _ in range(20)))
            assert {r.status_code for r in rs} == {200}
            assert rs[0].json()["choices"][0]["message"]["content"] == "echo 1: hi"
            assert (await a.get("/health")).status_code == 200
            assert (await a.get("/nope")).status_code == 404
            with pytest.raises(httpx.ReadTimeout):
                await b.post("/v1/chat/completions", content=body)
            dead = HttpxShard("http://127.0.0.1:9", {}, 1, 0.5, 0.5, verify=ctx, lean=lean)
            with pytest.raises(httpx.ConnectError):
                await dead.get("/health")
            await dead.aclose()
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("transport,workers", [("httpx", 1), ("fast", 1), ("httpx", 3)])
def test_concurrency_is_per_server_and_never_exceeded(tmp_path, stub_server, transport, workers):
    """`concurrency` is the most requests one server has in flight, also split over worker processes."""
    servers = [stub_server(latency_ms=40) for _ in range(2)]
    out = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    rows = make_rows(120, turns=(1,))
    stats = run_regeneration(write_rows(tmp_path / "in.jsonl", rows), out,
                             RegenSettings(model="stub-model", max_tokens=16, concurrency=5, transport=transport,
                                           workers=workers, **FAST), [s.address for s in servers],
                             log=lambda m: None)
    assert stats["counts"]["success"] == 120
    seen = [httpx.get(f"http://{s.address}/stats").json() for s in servers]
    assert sum(s["chat_requests"] for s in seen) == 120 + 2  # + one start probe each
    assert all(s["max_inflight"] == 5 for s in seen), seen
    assert {v["model"] for v in stats["servers"].values()} == {"stub-model"}  # also with workers
    assert stats["client"] == {"transport": transport, "workers": workers, "concurrency_per_server": 5}


def test_fast_transport_refuses_https_with_a_clear_error(tmp_path):
    out = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    with pytest.raises(ValueError, match="plain http only.*https://127.0.0.1:1"):
        run_regeneration(write_rows(tmp_path / "in.jsonl", make_rows(2)), out,
                         RegenSettings(model="m", transport="fast", **FAST), ["https://127.0.0.1:1"],
                         log=lambda m: None)
