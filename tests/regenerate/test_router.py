"""Regeneration through the SGLang router (`sglang-router` from the package index) as its single server.

The router is the real Rust gateway (`python -m sglang_router.launch_router`); it needs no GPU
and no SGLang install. Behind it:
- the project's stub server (`regenerate/stubserver.py`) for the fault tests: it is fast, counts
  its requests (GET /stats) and dies on SIGKILL like a real worker. It lacks the SGLang-only
  metadata endpoints (/model_info, /server_info); the router registers it anyway (model id
  "unknown"). (The router also probes each worker over HTTP/2 for gRPC; the stub logs a traceback
  for that one connection and goes on.)
- small real ASGI servers (FastAPI + uvicorn, `WORKER_APP` below) that *do* answer /model_info and
  record every request body: for what the router does with model names (lists them, does not
  route by them), with the request body (re-encodes it through SGLang's schema) and API keys.
- one real `transformers serve` (tiny model), which cannot work behind this router (422).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from specforge_assets.regenerate.client import NoServerAvailable
from specforge_assets.regenerate.journal import finished_rows
from specforge_assets.regenerate.runner import OutputPaths, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings

from .conftest import ids_across, make_rows, read_jsonl, write_rows

pytest.importorskip("sglang_router", reason="sglang-router is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.server

# A real OpenAI-compatible ASGI server that also answers SGLang's /model_info and /server_info
# (the router reads the worker's model from them). GET /asked lists every chat request body it got.
WORKER_APP = r"""
import sys
import uvicorn
from fastapi import FastAPI, Request

port, name = int(sys.argv[1]), sys.argv[2]
api_key = sys.argv[3] if len(sys.argv) > 3 else ""
app = FastAPI()
seen = []

@app.middleware("http")
async def check_key(request, call_next):  # as SGLang's --api-key: everything but /health needs it
    from fastapi.responses import JSONResponse
    if api_key and request.url.path != "/health" and \
            request.headers.get("authorization") != f"Bearer {api_key}":
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    return await call_next(request)

@app.get("/health")
def health():
    return {}

@app.get("/model_info")
def model_info():
    return {"model_path": name, "tokenizer_path": None, "is_generation": True}

@app.get("/server_info")
def server_info():
    return {"model_path": name}

@app.get("/v1/models")
def models():
    return {"object": "list", "data": [{"id": name, "object": "model"}]}

@app.get("/asked")
def asked():
    return seen

@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    seen.append(body)
    last = body["messages"][-1]["content"]
    return {"id": "c", "object": "chat.completion", "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{name}: {last}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}

print(f"PORT {port}", flush=True)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            code, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        code, text = e.code, e.read().decode()
    try:
        return code, json.loads(text)
    except ValueError:
        return code, text


def _wait_for(what: str, predicate, timeout: float = 60.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


class Router:
    def __init__(self, proc: subprocess.Popen, port: int, log):
        self.proc, self.port, self.log = proc, port, log
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"

    def workers(self) -> dict[str, bool]:
        """worker URL -> is_healthy, as the router sees them (GET /workers)."""
        _, body = _get(self.url + "/workers")
        return {w["url"]: w["is_healthy"] for w in body["workers"]}


@pytest.fixture
def sglang_router(tmp_path):
    """Factory: sglang_router([worker URLs]) -> Router, ready with every worker healthy; stopped at
    teardown. Round robin, so that every worker surely gets a share (the default, cache_aware, may
    keep these similar prompts on one worker). Health checks every second, one failure marks a
    worker unhealthy (defaults: 60 s, 3)."""
    started: list[Router] = []

    def start(worker_urls: list[str], *extra: str) -> Router:
        port = _free_port()
        log = open(tmp_path / f"router-{port}.log", "w")
        cmd = [
            sys.executable,
            "-m",
            "sglang_router.launch_router",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--worker-urls",
            *worker_urls,
            "--policy",
            "round_robin",
            "--health-check-interval-secs",
            "1",
            "--health-failure-threshold",
            "1",
            "--worker-startup-timeout-secs",
            "30",
            "--log-level",
            "warn",
            *extra,
        ]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        r = Router(proc, port, log)
        started.append(r)

        def ready():
            code, body = _get(r.url + "/readiness", timeout=2)
            return code == 200 and body.get("healthy_workers") == len(worker_urls)

        _wait_for(f"router on port {port} with {len(worker_urls)} workers", ready, proc=proc)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.terminate()
            try:
                r.proc.wait(10)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(5)
        r.log.close()


@pytest.fixture
def asgi_worker():
    """Factory: asgi_worker(model_name, api_key="") -> (url, Popen): WORKER_APP under uvicorn; killed
    at teardown."""
    procs: list[subprocess.Popen] = []

    def start(name: str, api_key: str = ""):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_APP, str(port), name, api_key], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().startswith("PORT ")
        url = f"http://127.0.0.1:{port}"
        _wait_for(f"ASGI worker {name}", lambda: _get(url + "/health", timeout=2)[0] == 200, proc=proc)
        return url, proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def _chat_ok(router: Router) -> bool:
    """One chat request through the router answers 200."""
    body = json.dumps({"model": "stub-model", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    req = urllib.request.Request(
        router.url + "/v1/chat/completions", data=body.encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def _stats(stub) -> dict:
    return _get(f"http://{stub.address}/stats")[1]


def _cli(router: Router, inp, outp, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "specforge_assets.cli",
        "regenerate",
        "--model",
        "stub-model",
        "--server-address",
        router.address,
        "--input-file-path",
        str(inp),
        "--output-file-path",
        str(outp),
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--request-timeout",
        "30",
        *extra,
    ]


def _nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}


def _assert_exactly_once(rows, outputs):
    ids = ids_across(outputs)
    assert Counter(ids) == Counter(r["id"] for r in rows)  # every row once, in exactly one file
    assert len(ids) == len(set(ids))


def test_cli_through_router_with_one_of_three_servers_sigkilled_is_exactly_once(tmp_path, stub_server, sglang_router):
    n = 900
    rows = make_rows(n)
    inp = write_rows(tmp_path / "in.jsonl", rows)
    stubs = [stub_server(latency_ms=30) for _ in range(3)]
    router = sglang_router([f"http://{s.address}" for s in stubs])
    victim = stubs[1]
    outp = tmp_path / "out" / "regen.jsonl"

    proc = subprocess.Popen(
        _cli(router, inp, outp, "--concurrency", "12", "--resume"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for("a sixth of the rows done", lambda: len(finished_rows(outp)) >= n // 6, proc=proc)
    served_by_victim = _stats(victim)["chat_requests"]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(5)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["input_rows"] == n
    assert summary["success"] + summary["error"] + summary["skipped"] == n  # counts reconcile
    outputs = OutputPaths.specforge(outp)
    _assert_exactly_once(rows, outputs)
    assert served_by_victim > 0  # round robin: the killed server really had a share of the run
    assert all(_stats(s)["chat_requests"] > 0 for s in (stubs[0], stubs[2]))
    # the router took the dead worker out (its own health check), the two others stay in
    _wait_for(
        "router marks the killed worker unhealthy",
        lambda: (
            router.workers()
            == {
                f"http://{stubs[0].address}": True,
                f"http://{victim.address}": False,
                f"http://{stubs[2].address}": True,
            }
        ),
        timeout=30,
    )
    # provenance names the router: the client never sees the workers behind it
    success = read_jsonl(outputs.success)
    assert {s for r in success for s in r["regeneration"]["servers"]} == {router.address}
    # rows that failed while the worker died are error rows a --resume finishes (the router's own
    # retries usually leave none); the rows already done are kept as they are
    before = {r["id"]: r for r in success}
    r = subprocess.run(
        _cli(router, inp, outp, "--concurrency", "12", "--resume"), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["success"], summary["error"], summary["skipped"]) == (n, 0, 0)
    _assert_exactly_once(rows, outputs)
    after = {r["id"]: r for r in read_jsonl(outputs.success)}
    assert all(after[k] == v for k, v in before.items())


def test_router_health_and_model_listing_with_stub_workers(stub_server, sglang_router):
    """What our client's probes (GET /readiness, /health, /v1/models: the first that exists
    decides) see through the router."""
    stubs = [stub_server(), stub_server()]
    router = sglang_router([f"http://{s.address}" for s in stubs])
    assert _get(router.url + "/health")[0] == 200
    code, models = _get(router.url + "/v1/models")
    # the stub has no SGLang /model_info, so the router cannot name the model
    assert code == 200 and [m["id"] for m in models["data"]] == ["unknown"]
    for s in stubs:
        s.kill()
    _wait_for("router notices both workers died", lambda: set(router.workers().values()) == {False}, timeout=30)
    # /health is the router's liveness, not its workers': it stays 200 with no worker alive.
    # /readiness is the one that says so (503), and it is what our client's probe asks first.
    assert _get(router.url + "/health")[0] == 200
    code, body = _get(router.url + "/readiness")
    assert code == 503 and body == {"status": "not ready", "reason": "insufficient healthy workers"}


def test_all_workers_down_behind_router_is_refused_at_start(tmp_path, stub_server, sglang_router):
    """The router is up but has no live worker: the start probe (a 1-token chat) gets its 503 and
    the run is refused with one clear line, before anything is written."""
    inp = write_rows(tmp_path / "in.jsonl", make_rows(5))
    stubs = [stub_server(), stub_server()]
    router = sglang_router([f"http://{s.address}" for s in stubs])
    for s in stubs:
        s.kill()
    _wait_for("router notices both workers died", lambda: set(router.workers().values()) == {False}, timeout=30)
    outp = tmp_path / "out" / "regen.jsonl"
    r = subprocess.run(_cli(router, inp, outp), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no regeneration server answered the start probe") and "HTTP 503" in last
    assert "no_available_workers" in last and not outp.exists()


@pytest.mark.slow
def test_all_workers_die_mid_run_behind_router_then_resume_is_exactly_once(tmp_path, stub_server, sglang_router):
    """Every worker behind the router dies mid-run: the router stays up and answers 500/503, so
    each remaining row ends as an error row (or the run stops with the journal intact); with the
    workers back on their ports, --resume finishes every row once."""
    n = 200
    rows = make_rows(n)
    inp = write_rows(tmp_path / "in.jsonl", rows)
    stubs = [stub_server(latency_ms=20), stub_server(latency_ms=20)]
    ports = [s.port for s in stubs]
    # the router's own retry backoff (default 5 retries from 50 ms) makes each 503 slow, and its
    # circuit breaker keeps a worker refused for 60 s after failures even once it is healthy: shorten both
    router = sglang_router(
        [f"http://{s.address}" for s in stubs],
        "--retry-max-retries",
        "2",
        "--retry-initial-backoff-ms",
        "5",
        "--retry-max-backoff-ms",
        "20",
        "--cb-timeout-duration-secs",
        "2",
    )
    outp = tmp_path / "out" / "regen.jsonl"
    outputs = OutputPaths.specforge(outp)
    settings = RegenSettings(
        model="stub-model",
        max_tokens=16,
        concurrency=4,
        backoff_base_s=0.02,
        backoff_max_s=0.1,
        probe_interval_s=0.2,
        request_timeout_s=10.0,
        connect_timeout_s=2.0,
        all_down_timeout_s=5.0,
        max_attempts=3,
    )
    result: dict = {}

    def first_run():
        try:
            result["stats"] = run_regeneration(
                inp, outputs, settings, [router.address], resume=True, log=lambda m: None
            )
        except NoServerAvailable as e:
            result["stopped"] = str(e)

    t = threading.Thread(target=first_run)
    t.start()
    try:
        _wait_for("some rows done", lambda: len(finished_rows(outp)) >= 50, timeout=120)
    finally:
        for s in stubs:
            s.kill()
        t.join(300)
    assert not t.is_alive()
    if "stats" in result:
        counts = result["stats"]["counts"]
        assert counts["success"] + counts["error"] == n and counts["error"] > 0
        assert set(result["stats"]["request_error_kinds"]) & {"http_500", "http_503"}
        _assert_exactly_once(rows, outputs)
    else:  # stopped: the journal holds what was done, nothing was published
        assert "out of rotation" in result["stopped"] and not outp.exists()
    done_before = len(finished_rows(outp))
    assert 50 <= done_before <= n
    for p in ports:  # the workers come back on their ports; the router's health check takes them back
        stub_server(port=p, latency_ms=20)
    _wait_for("router sees the workers again", lambda: set(router.workers().values()) == {True}, timeout=30)
    _wait_for("router's circuit breakers close again", lambda: _chat_ok(router), timeout=30)
    stats = run_regeneration(inp, outputs, settings, [router.address], resume=True, log=lambda m: None)
    assert _nonzero(stats["counts"]) == {"success": n}
    assert stats["rows_this_run"] < n  # rows finished before the outage were not asked again
    _assert_exactly_once(rows, outputs)


def test_router_passes_the_model_field_through_and_does_not_route_by_it(tmp_path, asgi_worker, sglang_router):
    (url_a, _), (url_b, _) = asgi_worker("model-a"), asgi_worker("model-b")
    router = sglang_router([url_a, url_b])
    code, models = _get(router.url + "/v1/models")
    assert code == 200 and sorted(m["id"] for m in models["data"]) == ["model-a", "model-b"]
    rows = make_rows(24, turns=(1,))
    inp = write_rows(tmp_path / "in.jsonl", rows)
    outp = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    settings = RegenSettings(model="model-a", max_tokens=16, concurrency=2, request_timeout_s=30.0)
    stats = run_regeneration(inp, outp, settings, [router.address], resume=False, log=lambda m: None)
    assert _nonzero(stats["counts"]) == {"success": 24}
    # the router forwards `model` unchanged (no rewrite, no check) ...
    assert (
        {b["model"] for b in _get(url_a + "/asked")[1]}
        == {b["model"] for b in _get(url_b + "/asked")[1]}
        == {"model-a"}
    )
    # ... and sends a model-a request to the model-b worker as well (round robin, single-model
    # mode): the run's server_models and each row's provenance are where a mixed fleet shows.
    assert set(stats["server_models"]) == {"model-a", "model-b"}
    answered = Counter(r["regeneration"]["model"] for r in read_jsonl(outp.success))
    assert set(answered) == {"model-a", "model-b"}
    assert all(
        r["conversations"][-1]["content"].startswith(r["regeneration"]["model"] + ": ")
        for r in read_jsonl(outp.success)
    )


def test_regenerated_asset_with_the_router_as_its_single_server(
    tmp_path, monkeypatch, stub_server, sglang_router, dagster_instance
):
    """The real `sources_and_regenerated` job (real definitions, a temp instance), configured with
    `server_addresses: [<router>]`: every row regenerated once, its checks pass."""
    import yaml

    from specforge_assets.definitions import defs
    from specforge_assets.keys import REGENERATED

    stubs = [stub_server() for _ in range(3)]
    router = sglang_router([f"http://{s.address}" for s in stubs])
    root, cfg, key = tmp_path / "data", tmp_path / "configs", "s1"
    root.mkdir()
    cfg.mkdir()
    rows = make_rows(30)
    write_rows(tmp_path / "in" / "s1.jsonl", rows)
    (cfg / "sources.yaml").write_text(
        yaml.safe_dump({"sources": {key: {"format": "conversations", "data_path": str(tmp_path / "in" / "s1.jsonl")}}})
    )
    (cfg / "regenerate.yaml").write_text(
        yaml.safe_dump(
            {
                "sources": {
                    key: {
                        "enabled": True,
                        "model": "stub-model",
                        "concurrency": 12,
                        "server_addresses": [router.address],
                    }
                }
            }
        )
    )
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(root))
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(cfg))
    dagster_instance.add_dynamic_partitions("sources", [key])

    res = defs.resolve_job_def("sources_and_regenerated").execute_in_process(
        instance=dagster_instance, partition_key=key, raise_on_error=False
    )
    assert res.success
    checks = [e for e in res.get_asset_check_evaluations() if e.asset_key == REGENERATED]
    assert checks and all(c.passed for c in checks), [(c.check_name, c.passed) for c in checks]
    meta = dagster_instance.fetch_materializations(REGENERATED, limit=1).records[0].asset_materialization.metadata
    assert meta["success"].value == 30
    out = read_jsonl(root / "regenerated" / key / "train.jsonl")
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)
    assert {s for r in out for s in r["regeneration"]["servers"]} == {router.address}
    assert all(_stats(s)["chat_requests"] > 0 for s in stubs)  # the router spread the rows over all three


@pytest.mark.parametrize("dialect", ["openai", "transformers"])
def test_what_the_router_does_to_the_request_body(tmp_path, asgi_worker, sglang_router, dialect):
    """The router (default `--backend sglang`) re-encodes each request through SGLang's typed OpenAI
    schema instead of forwarding it: the sampling fields regeneration sends in the openai dialect
    (top_p, top_k, min_p, a real repetition_penalty, seed, chat_template_kwargs) reach the worker as
    sent, `max_tokens` arrives renamed `max_completion_tokens`, SGLang-only defaults are added, and
    any field outside that schema is dropped: an `extra_body` key of another server, and the
    `generation_config` of the transformers dialect (so its top_k/min_p/repetition_penalty would not
    apply). Pinned here so that a router upgrade that changes it is noticed."""
    url, _ = asgi_worker("stub-model")
    router = sglang_router([url])
    inp = write_rows(tmp_path / "in.jsonl", make_rows(3, turns=(1,)))
    settings = RegenSettings(
        model="stub-model",
        max_tokens=16,
        temperature=0.5,
        top_p=0.75,
        top_k=20,
        min_p=0.25,
        repetition_penalty=1.5,
        seed=7,
        reasoning="disable",
        dialect=dialect,
        extra_body={"my_field": {"x": 1}},
        concurrency=1,
        request_timeout_s=30.0,
    )
    outp = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    stats = run_regeneration(inp, outp, settings, [router.address], resume=False, log=lambda m: None)
    assert _nonzero(stats["counts"]) == {"success": 3}
    sent = settings.request_body([{"role": "user", "content": "question 1.0"}], 1)
    got = next(b for b in _get(url + "/asked")[1] if b["messages"] == sent["messages"])
    assert "my_field" in sent and "my_field" not in got  # dropped
    assert got["max_completion_tokens"] == sent.pop("max_tokens") == 16 and "max_tokens" not in got  # renamed
    assert isinstance(got["seed"], int)
    kept = {k: v for k, v in sent.items() if k not in ("my_field", "seed", "generation_config")}
    assert {k: got.get(k) for k in kept} == kept  # the rest as sent
    if dialect == "transformers":
        assert "generation_config" in sent and "generation_config" not in got  # dropped
        assert not {"top_k", "min_p", "repetition_penalty"} & set(got)
    else:
        assert (got["top_k"], got["min_p"], got["repetition_penalty"]) == (20, 0.25, 1.5)
    # added by the router: SGLang's defaults for its own fields
    assert got["separate_reasoning"] is True and got["no_stop_trim"] is False and got["ignore_eos"] is False


def test_router_in_front_of_real_transformers_serve_is_refused_at_start(tmp_path, real_server, sglang_router):
    """A real `transformers serve` (tiny model) behind the router: the router adds SGLang-only fields
    (`separate_reasoning`, `no_stop_trim`, ...) to every request and `transformers serve` rejects
    unknown fields with 422, so no request can succeed. The run is refused at its start probe with
    one line that names the cause, before anything is written."""
    router = sglang_router([f"http://{real_server.address}"])
    inp = write_rows(tmp_path / "in.jsonl", make_rows(3))
    outp = tmp_path / "out" / "regen.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "specforge_assets.cli",
        "regenerate",
        "--model",
        real_server.served_model_name,
        "--server-address",
        router.address,
        "--input-file-path",
        str(inp),
        "--output-file-path",
        str(outp),
        "--max-tokens",
        "8",
        "--dialect",
        "transformers",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no regeneration server answered the start probe"), last
    assert "HTTP 422" in last and "Unexpected fields in the request" in last and "separate_reasoning" in last
    assert not outp.exists()
    # the same server without the router is fine (tests/regenerate/test_real_server.py covers it fully)
    direct = subprocess.run([*cmd[:7], real_server.address, *cmd[8:]], capture_output=True, text=True, timeout=180)
    assert direct.returncode == 0, direct.stderr
    summary = json.loads(direct.stdout.strip().splitlines()[-1])  # the random tiny model may answer
    assert summary["success"] >= 1 and summary["success"] + summary["error"] == 3  # empty: an error row


def test_api_key_through_the_router(tmp_path, asgi_worker, sglang_router):
    """Workers started with an API key (SGLang's --api-key: all but /health need it) behind a router
    started with the same `--api-key`: the router then requires that key from its clients too, and
    the key from SPECFORGE_REGEN_API_KEY gets through; without it the run is refused at once."""
    import os

    secret = "sk-router-test-0123456789"
    urls = [asgi_worker("stub-model", secret)[0] for _ in range(2)]
    assert _get(urls[0] + "/v1/models")[0] == 401
    router = sglang_router(urls, "--api-key", secret)
    inp = write_rows(tmp_path / "in.jsonl", make_rows(8))
    outp = tmp_path / "out" / "regen.jsonl"
    env = {**os.environ, "SPECFORGE_REGEN_API_KEY": secret}
    r = subprocess.run(_cli(router, inp, outp), capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["success"] == 8
    assert secret not in outp.read_text() and secret not in r.stderr
    env.pop("SPECFORGE_REGEN_API_KEY")
    r = subprocess.run(
        _cli(router, inp, tmp_path / "out2" / "regen.jsonl"), capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode != 0 and "HTTP 401" in r.stderr.strip().splitlines()[-1]


def test_client_probe_asks_readiness_first(stub_server, sglang_router):
    """The client's health probe: the router with no live worker is not usable (its /readiness
    503 decides, though /health says 200); a plain server without /readiness (404) falls back to
    /health."""
    import asyncio

    from specforge_assets.regenerate.client import ServerPool

    stubs = [stub_server(), stub_server()]
    router = sglang_router([f"http://{s.address}" for s in stubs])
    plain = stub_server()

    async def health(addresses):
        pool = ServerPool(addresses, RegenSettings(model="stub-model"), log=lambda m: None)
        try:
            return [await pool._health(s) for s in pool.servers]
        finally:
            await pool.close()

    assert asyncio.run(health([router.address, plain.address])) == [True, True]
    for s in stubs:
        s.kill()
    _wait_for("router notices both workers died", lambda: set(router.workers().values()) == {False}, timeout=30)
    assert asyncio.run(health([router.address, plain.address])) == [False, True]
