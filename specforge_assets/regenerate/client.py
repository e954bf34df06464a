"""Async OpenAI-compatible chat client over a pool of servers.

- aiohttp through its public API only: one `aiohttp.ClientSession` per server (`_Http`), its
  connection pool sized from `concurrency`. The base URL keeps its path prefix; IPv6 literals,
  https with the system's or `SSL_CERT_FILE` / `SSL_CERT_DIR`'s CAs, the proxy of the
  environment (HTTP_PROXY / HTTPS_PROXY / ALL_PROXY, NO_PROXY respected), redirects, chunked and
  gzip replies are aiohttp's. Not httpx: one httpx client with hundreds of connections spends
  milliseconds of CPU per request in its pool (the pool scans every connection, and for each
  idle one every connection again, on each request and each reply), so one client process could
  not keep 2,048 requests in flight at the rate 4 GPU servers answer (bench/RESULTS.md).
- least-loaded dispatch with a per-server in-flight cap (= concurrency), affinity to the server
  that answered the previous turn of the same row when it is not busier than the others.
- transient-only retries (connect errors, timeouts, dropped connections, 408/409/425/429/5xx) with
  exponential backoff + full jitter, each retry preferring another server; permanent errors
  (other 4xx, e.g. context overflow; any other status such as 204) fail the request at once.
- a server failing `failures_to_eject` times in a row is taken out of rotation and probed back
  in (GET /readiness, /health, then /v1/models: the first that exists decides) every `probe_interval_s`.
- every 200 answer goes through `reply.check_reply` (the one reply check): shape faults (no
  choices, error object) are retried like transient errors, a 4xx error object and unusable
  content fail the request at once.
- credentials in an address (`http://user:KEY@host:port`, also without scheme) are sent as HTTP
  Basic auth to that server only and never kept in the address: labels, logs, stats and row
  provenance only ever see `host:port`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import aiohttp

from ..errors import UserError
from .text import clean
from .reply import BadReply, Reply, RequestFailed, check_reply
from .settings import RegenSettings

TRANSIENT_STATUS = {408, 409, 425, 429}
# connect/read/write errors (TLS refusals included), all timeouts, protocol errors, dropped
# connections, a body that does not decode (a broken gzip stream); aiohttp.TooManyRedirects is
# caught before these and is permanent
TRANSIENT_EXC = (aiohttp.ClientError, asyncio.TimeoutError)


class NoServerAvailable(RuntimeError, UserError):
    """No server can take requests (start probe failed everywhere, or all out of rotation)."""


class ServerAddressError(ValueError, UserError):
    """A server address that cannot be used (empty, or credentials together with an API key)."""


API_KEY_HINT = "pass the API key in $SPECFORGE_REGEN_API_KEY (api_key_env) instead"


def _host_port(netloc: str, scheme: str, name: str, shown: str) -> tuple[str, int]:
    """(host, port) of a ``host[:port]`` / ``[v6][:port]`` netloc (no user-info). The port
    defaults to the scheme's. Raises ServerAddressError naming `name` and the bad value."""
    default = 443 if scheme == "https" else 80
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ServerAddressError(f"{name} {shown} is not a valid address (Invalid IPv6 URL: no closing ']')")
        host, after = netloc[1:end], netloc[end + 1 :]
        if after and not after.startswith(":"):
            raise ServerAddressError(f"{name} {shown} is not a valid address (text after ']' that is not :PORT)")
        port = after[1:] if after else None
    else:
        host, sep, port = netloc.rpartition(":")
        if not sep:
            host, port = netloc, None
    if not host:
        raise ServerAddressError(f"{name} {shown} has no host (give HOST:PORT or a URL)")
    if port is None or port == "":
        if port == "":
            raise ServerAddressError(f"{name} {shown} has an empty port (give HOST:PORT, e.g. 127.0.0.1:30000)")
        return host, default
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ServerAddressError(
            f"{name} {shown} has port {clean(port)!r}, not a number in 1-65535 (give HOST:PORT, e.g. 127.0.0.1:30000)"
        )
    return host, int(port)


def split_address(addr: str, name: str = "server address") -> tuple[str, str | None]:
    """``HOST:PORT`` or a URL -> (base URL without user-info and without ``/v1``, Authorization
    header value or None). User-info (``http://user:KEY@host:port``, ``user:KEY@host:port``) is
    turned into HTTP Basic auth (as curl and httpx do with such URLs).

    Refused with ServerAddressError (its message names `name`, never a secret): an empty address,
    a query string or fragment (``?api_key=...`` would be kept in every label, log and output
    row; the key belongs in $SPECFORGE_REGEN_API_KEY), a port that is not a number, a host that
    cannot be parsed."""
    addr = addr.strip().rstrip("/")
    if not addr:
        raise ServerAddressError(f"{name} is empty (give HOST:PORT or a URL)")
    if "://" not in addr:
        addr = "http://" + addr
    scheme, rest = addr.split("://", 1)
    netloc, slash, path = rest.partition("/")
    userinfo = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
    after = netloc + slash + path
    # checked before anything is shown: the value of a query string or fragment is never echoed
    if "?" in after:
        raise ServerAddressError(f"{name} has a query string; {API_KEY_HINT}")
    if "#" in after:
        raise ServerAddressError(f"{name} has a fragment ('#...'); give HOST:PORT or a URL without one")
    if path.endswith("v1") and (path == "v1" or path.endswith("/v1")):
        path = path[:-2].rstrip("/")
        slash = slash if path else ""
    shown = clean(f"{scheme}://{netloc}{slash}{path}")
    if not netloc:
        raise ServerAddressError(f"{name} {shown} has no host (give HOST:PORT or a URL)")
    _host_port(netloc, scheme, name, shown)
    try:
        urlsplit(f"{scheme}://{netloc}/").port
    except ValueError as e:
        raise ServerAddressError(f"{name} {shown} is not a valid address ({clean(str(e))})") from None
    auth = None
    if userinfo is not None:
        parts = urlsplit(f"{scheme}://{userinfo}@localhost/")
        user, pw = unquote(parts.username or ""), unquote(parts.password or "")
        if user or pw:
            auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    return f"{scheme}://{netloc}{slash}{path}".rstrip("/"), auth


def check_addresses(addresses: list[str], what: str = "server addresses") -> list[str]:
    """Every address of a list through `split_address`, numbered from 1 in the message
    (``--server-address: server address 3 has a query string; ...``). `what` names where the
    list came from (the CLI flag or the config key). Returns the addresses unchanged."""
    for n, a in enumerate(addresses, 1):
        if not isinstance(a, str):
            raise ServerAddressError(f"{what}: server address {n} is a {type(a).__name__}, not a string")
        split_address(a, name=f"{what}: server address {n}")
    return list(addresses)


def strip_credentials(addr: str) -> str:
    """`addr` as it may be shown or recorded: any ``user:password@`` removed (no parsing errors)."""
    addr = str(addr)
    scheme, sep, rest = addr.rpartition("://") if "://" in addr else ("", "", addr)
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"


def _short_error(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    return clean(f"{type(e).__name__}: {msg}"[:500])


def env_proxy(base: str) -> str | None:
    """The proxy URL the environment gives for requests to `base` (HTTP_PROXY / HTTPS_PROXY /
    ALL_PROXY, either case), or None: none set, or the host is in NO_PROXY (as curl reads them)."""
    u = urlsplit(base)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(u.hostname or "", proxies):
        return None
    return proxies.get(u.scheme) or proxies.get("all")


class HttpReply:
    """An HTTP answer read in full: `status` (int), `body` (bytes, decompressed)."""

    __slots__ = ("status", "body")

    def __init__(self, status: int, body: bytes):
        self.status, self.body = status, body

    def text(self, limit: int) -> str:
        return self.body[:limit].decode("utf-8", "replace")


class _Http:
    """The one aiohttp session of one server. `base` keeps any path prefix (a gateway such as
    ``https://host/gateway/model-a``); at most concurrency + 2 connections (the in-flight cap is
    the pool's, the two spare ones serve health probes); the proxy from the environment (read
    once, `env_proxy`); `tls`: the context for https (built once per pool from the system's CAs or
    SSL_CERT_FILE / SSL_CERT_DIR). Timeouts in seconds: `connect_timeout_s` for each connection,
    `request_timeout_s` for each read of a reply. No retries here: `ServerPool.chat` retries
    transient errors itself, each on the least-loaded server."""

    def __init__(self, base: str, headers: dict, settings: RegenSettings, tls: ssl.SSLContext | None):
        self.base = base
        self.session = aiohttp.ClientSession(
            headers=headers,
            trust_env=False,
            proxy=env_proxy(base),
            connector=aiohttp.TCPConnector(
                limit=int(settings.concurrency) + 2, limit_per_host=0, ssl=tls if tls is not None else True
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.request_timeout_s
            ),
        )

    async def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float | None = None
    ) -> HttpReply:
        """`method` `base` + `path` (path from ``/``) with `body`; `timeout`: seconds for the whole
        request instead of the session's. Raises aiohttp.ClientError / asyncio.TimeoutError."""
        kw = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
        async with self.session.request(method, self.base + path, data=body, **kw) as r:
            return HttpReply(r.status, await r.read())

    async def close(self) -> None:
        await self.session.close()


@dataclass
class Server:
    address: str  # base URL without /v1
    http: _Http
    capacity: int
    inflight: int = 0
    up: bool = True
    consecutive_failures: int = 0
    model: str | None = None
    requests: int = 0
    ok: int = 0
    failures: int = 0
    ejections: int = 0
    _probe: asyncio.Task | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.address.split("://", 1)[-1]


class ServerPool:
    def __init__(self, addresses: list[str], settings: RegenSettings, api_key: str | None = None, log=None):
        """`addresses`: HOST:PORT or URLs (a path prefix is kept), possibly with user-info (sent
        as Basic auth to that server only). Raises ServerAddressError for an unusable address."""
        if not addresses:
            raise ServerAddressError("no server addresses given (e.g. --server-address 127.0.0.1:30000)")
        self.settings = settings
        self.log = log or (lambda msg: None)
        base_headers = {"content-type": "application/json"}
        if api_key:
            base_headers["authorization"] = f"Bearer {api_key}"
        self.servers: list[Server] = []
        seen = set()
        check_addresses(addresses)
        tls: ssl.SSLContext | None = None
        for a in addresses:
            base, basic = split_address(a)
            if base in seen:
                continue
            seen.add(base)
            headers = dict(base_headers)
            if basic:
                if api_key:
                    raise ServerAddressError(
                        f"server address {strip_credentials(a)} carries credentials and an API key is set too "
                        "(SPECFORGE_REGEN_API_KEY / api_key_env); give one of them"
                    )
                headers["authorization"] = basic
            if base.startswith("https://") and tls is None:
                tls = ssl.create_default_context()  # once per pool: loading the CAs takes ~25 ms
            self.servers.append(Server(base, _Http(base, headers, settings, tls), settings.concurrency))
        self._cond = asyncio.Condition()
        self._waiting = 0
        self._closed = False
        self.retries = 0
        self.error_kinds: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True
        for s in self.servers:
            if s._probe:
                s._probe.cancel()
        for s in self.servers:
            await s.http.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def start(self, probe_chat: bool = True) -> None:
        """Health-probe every server; keep those that answer. Raise when none does."""
        results = await asyncio.gather(*(self._initial_probe(s, probe_chat) for s in self.servers))
        bad = [f"{s.label}: {err}" for s, err in zip(self.servers, results) if err]
        if len(bad) == len(self.servers):
            raise NoServerAvailable(
                "no regeneration server answered the start probe ("
                + "; ".join(" ".join(b.split()) for b in bad)
                + "); check --server-address / server_addresses and that the "
                "server is running and serves this model"
            )
        for s, err in zip(self.servers, results):
            if err:
                s.up = False
                self.log(f"server {s.label} did not answer the start probe ({err}); probing it in the background")
                self._schedule_probe(s)

    async def _initial_probe(self, s: Server, probe_chat: bool) -> str | None:
        try:
            if probe_chat:
                # As SpecForge does: a 1-token chat request checks the model name end to end.
                body = self.settings.request_body([{"role": "user", "content": "Hello, how are you?"}], None)
                body["max_tokens"] = 1
                body.pop("generation_config", None)
                r = await s.http.request(
                    "POST",
                    "/v1/chat/completions",
                    json.dumps(body).encode(),
                    timeout=max(self.settings.connect_timeout_s, 60.0),
                )
                if r.status != 200:
                    return f"HTTP {r.status}: {r.text(300)}"
                model = json.loads(r.body).get("model")
                s.model = clean(model) if isinstance(model, str) else None
            else:
                if not await self._health(s):
                    return "health check failed"
            return None
        except Exception as e:  # noqa: BLE001 - any failure means "not usable now"
            return _short_error(e)

    async def _health(self, s: Server) -> bool:
        """Usable now? `GET /readiness` where the server has it (the SGLang router: 503 while no
        worker is alive, though its `/health` says 200), else `/health`, else `/v1/models`; a 404
        or 405 moves on to the next path, any other answer decides."""
        for path in ("/readiness", "/health", "/v1/models"):
            try:
                r = await s.http.request("GET", path, timeout=self.settings.connect_timeout_s + 5)
                if r.status == 200:
                    return True
                if r.status not in (404, 405):
                    return False
            except Exception:  # noqa: BLE001
                return False
        return False

    def _schedule_probe(self, s: Server) -> None:
        if s._probe is None or s._probe.done():
            s._probe = asyncio.get_running_loop().create_task(self._probe_loop(s))

    async def _probe_loop(self, s: Server) -> None:
        while not self._closed and not s.up:
            await asyncio.sleep(self.settings.probe_interval_s)
            if await self._health(s):
                s.up = True
                s.consecutive_failures = 0
                self.log(f"server {s.label} answers again; back in rotation")
                async with self._cond:
                    self._cond.notify_all()

    def _mark_failure(self, s: Server) -> None:
        s.failures += 1
        s.consecutive_failures += 1
        if s.up and s.consecutive_failures >= self.settings.failures_to_eject:
            s.up = False
            s.ejections += 1
            self.log(f"server {s.label} failed {s.consecutive_failures} times in a row; out of rotation")
            self._schedule_probe(s)

    # -- dispatch --------------------------------------------------------------------------
    def _pick(self, prefer: str | None, avoid: str | None) -> Server | None:
        candidates = [s for s in self.servers if s.up and s.inflight < s.capacity]
        if not candidates:
            return None
        if avoid and len(candidates) > 1:
            candidates = [s for s in candidates if s.address != avoid] or candidates
        best = min(candidates, key=lambda s: s.inflight / s.capacity)
        if prefer:
            for s in candidates:
                if s.address == prefer and s.inflight / s.capacity <= best.inflight / best.capacity + 0.25:
                    return s
        return best

    async def _acquire(self, prefer: str | None, avoid: str | None) -> Server:
        s = self._pick(prefer, avoid)  # fast path: one event loop thread, no await in between
        if s is not None:
            s.inflight += 1
            return s
        deadline = None
        self._waiting += 1
        try:
            return await self._acquire_slow(prefer, avoid, deadline)
        finally:
            self._waiting -= 1

    async def _acquire_slow(self, prefer: str | None, avoid: str | None, deadline: float | None) -> Server:
        """Wait for a free slot on a server in rotation. While every server is out of rotation,
        poll (outside the lock) until one is back or `all_down_timeout_s` has passed, then raise
        `NoServerAvailable`.

        No `asyncio.wait_for(cond.wait())` here: before Python 3.12 it runs the wait in a task of
        its own, and a cancelled run (another row hit the all-down timeout) could leave that task
        waiting for the condition's lock while its caller, cancelled too, waited for it: the run
        never ended (seen under CPU load in tests/regenerate/test_router.py)."""
        while True:
            async with self._cond:
                s = self._pick(prefer, avoid)
                if s is not None:
                    s.inflight += 1
                    return s
                if any(x.up for x in self.servers):
                    deadline = None
                    await self._cond.wait()  # a released slot or a server back in rotation notifies
                    continue
            now = time.monotonic()
            deadline = deadline or now + self.settings.all_down_timeout_s
            if now >= deadline:
                raise NoServerAvailable(
                    f"every regeneration server has been out of rotation for "
                    f"{self.settings.all_down_timeout_s:.0f}s: " + ", ".join(s.label for s in self.servers)
                )
            await asyncio.sleep(min(1.0, self.settings.probe_interval_s, deadline - now))

    async def _release(self, s: Server) -> None:
        s.inflight -= 1
        if self._waiting:  # only pay for the lock when someone waits for a slot
            async with self._cond:
                self._cond.notify(1)

    def _count(self, kind: str) -> None:
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    async def chat(self, body: dict, prefer: str | None = None) -> tuple[Reply, str]:
        """POST /v1/chat/completions with retries + failover. Returns (validated reply, server label).

        Every 200 body goes through `reply.check_reply` (for the run's reasoning mode). Raises
        `RequestFailed` for a permanent HTTP error or when attempts are spent, `BadReply` (a
        RequestFailed) for a reply without usable text."""
        payload = json.dumps(body).encode()
        st = self.settings
        avoid = None
        last = "no attempt"
        last_kind = "transient_exhausted"
        last_bad: BadReply | None = None
        for attempt in range(st.max_attempts):
            if attempt:
                self.retries += 1
                delay = min(st.backoff_max_s, st.backoff_base_s * (2 ** (attempt - 1)))
                await asyncio.sleep(random.uniform(0.5 * delay, delay))
            s = await self._acquire(prefer if attempt == 0 else None, avoid)
            s.requests += 1
            try:
                r = await s.http.request("POST", "/v1/chat/completions", payload)
            except aiohttp.TooManyRedirects as e:
                await self._release(s)
                self._count("redirects")
                raise RequestFailed(f"{_short_error(e)} (from {s.label})", kind="redirects", server=s.label) from None
            except TRANSIENT_EXC as e:
                await self._release(s)
                self._mark_failure(s)
                last, last_kind, last_bad = _short_error(e), "transient_exhausted", None
                self._count(
                    "timeout"
                    if isinstance(e, asyncio.TimeoutError)
                    else "bad_response"
                    if isinstance(e, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError))
                    else "connection"
                )
                avoid = s.address
                continue
            await self._release(s)
            code = r.status
            if code == 200:
                try:
                    data = json.loads(r.body)
                except ValueError as e:
                    self._mark_failure(s)
                    last, last_kind, last_bad = f"invalid JSON from {s.label}: {e}", "transient_exhausted", None
                    self.error_kinds["bad_response"] = self.error_kinds.get("bad_response", 0) + 1
                    avoid = s.address
                    continue
                s.consecutive_failures = 0  # the server answered; the reply is another matter
                try:
                    reply = check_reply(data, st.reasoning)
                except BadReply as e:
                    e.server = s.label
                    self._count(e.kind)
                    if not e.retry:
                        raise
                    last, last_kind, last_bad = f"{e} (from {s.label})", e.kind, e
                    avoid = s.address
                    continue
                s.ok += 1
                return reply, s.label
            text = r.text(500)
            if code in TRANSIENT_STATUS or code >= 500:
                self._mark_failure(s)
                last, last_kind, last_bad = f"HTTP {code} from {s.label}: {text}", "transient_exhausted", None
                self.error_kinds[f"http_{code}"] = self.error_kinds.get(f"http_{code}", 0) + 1
                avoid = s.address
                continue
            # permanent: the request itself is wrong (e.g. context overflow); the server is fine.
            s.consecutive_failures = 0
            self.error_kinds[f"http_{code}"] = self.error_kinds.get(f"http_{code}", 0) + 1
            raise RequestFailed(f"HTTP {code} from {s.label}: {text}", kind=f"http_{code}", server=s.label, status=code)
        msg = f"gave up after {st.max_attempts} attempts; last error: {last}"
        if last_bad is not None:
            bad = BadReply(msg, last_kind, finish_reason=last_bad.finish_reason, status=last_bad.status)
            bad.server = last_bad.server
            raise bad
        raise RequestFailed(msg, kind=last_kind)

    def stats(self) -> dict:
        return {
            s.label: {
                "requests": s.requests,
                "ok": s.ok,
                "failures": s.failures,
                "ejections": s.ejections,
                "up": s.up,
                "model": s.model,
            }
            for s in self.servers
        }
