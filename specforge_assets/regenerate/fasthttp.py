"""A minimal HTTP/1.1 keep-alive client on asyncio protocols, for plain-http inference servers.

Why: per request, httpx costs ~1-3 ms of client CPU (bench/RESULTS.md); on a small machine that,
not the servers, caps regeneration. This client does only what chat completions need — POST/GET
with a body, Content-Length or chunked responses, keep-alive, a bounded connection pool, connect
and whole-request timeouts — at a fraction of the CPU. https:// servers (and `transport: httpx`)
use httpx instead.
"""
from __future__ import annotations

import asyncio
import json


class FastHTTPError(Exception):
    """Base: every failure here is a transport failure (transient for the caller)."""


class ConnectFailed(FastHTTPError):
    pass


class RequestTimeout(FastHTTPError):
    pass


class ConnectionDropped(FastHTTPError):
    pass


class Response:
    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict, content: bytes):
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class _Conn(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.got_bytes = False
        self._status = None
        self._headers = None
        self._body_start = 0
        self._length = None
        self._chunked = False
        self.keep_alive = True

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if (self.waiter is not None and not self.waiter.done() and self._status is not None
                and self._length is None and not self._chunked):  # body delimited by close
            self.waiter.set_result(Response(self._status, self._headers, bytes(self.buf[self._body_start:])))
            return
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionDropped(
                f"connection closed by the server{' mid-response' if self.got_bytes else ' before a response'}"))

    def data_received(self, data):
        self.got_bytes = True
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                self._try_parse()
            except Exception as e:  # noqa: BLE001 - malformed response
                self.waiter.set_exception(ConnectionDropped(f"malformed HTTP response: {e}"))
                self.transport.abort()

    def _try_parse(self):
        if self._status is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            self._status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            self._headers = headers
            self._body_start = end + 4
            if "content-length" in headers:
                self._length = int(headers["content-length"])
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                self._chunked = True
            else:
                self._length = None  # read until close
            if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
                self.keep_alive = False
        if self._chunked:
            body = self._parse_chunked()
            if body is None:
                return
        elif self._length is not None:
            if len(self.buf) - self._body_start < self._length:
                return
            body = bytes(self.buf[self._body_start:self._body_start + self._length])
        else:
            return  # completed by connection_lost... treat as dropped unless closed cleanly
        resp = Response(self._status, self._headers, body)
        self._reset()
        self.waiter.set_result(resp)

    def _parse_chunked(self):
        pos = self._body_start
        out = bytearray()
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                end = self.buf.find(b"\r\n\r\n", pos - 2)
                if end < 0:
                    return None
                return bytes(out)
            if len(self.buf) < pos + size + 2:
                return None
            out += self.buf[pos:pos + size]
            pos += size + 2

    def _reset(self):
        self.buf = bytearray()
        self._status = None
        self._headers = None
        self._length = None
        self._chunked = False
        self.got_bytes = False


def _expire(fut: asyncio.Future, msg: str) -> None:
    if not fut.done():
        fut.set_exception(RequestTimeout(msg))


class FastHTTPClient:
    def __init__(self, host: str, port: int, max_connections: int, connect_timeout: float, timeout: float,
                 headers: dict | None = None):
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._sem = asyncio.Semaphore(max_connections)
        self._idle: list[_Conn] = []
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items() if k.lower() != "content-type")
        self._head_tail = f"host: {host}:{port}\r\n{extra}".encode()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Conn, self.host, self.port),
                                             self.connect_timeout)
        except asyncio.TimeoutError as e:
            raise ConnectFailed(f"connect to {self.host}:{self.port} timed out") from e
        except OSError as e:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {e}") from e
        return conn

    async def request(self, method: str, path: str, body: bytes = b"", timeout: float | None = None) -> Response:
        async with self._sem:
            reused = False
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    reused = True
                    break
            else:
                conn = await self._connect()
            try:
                return await self._send(conn, method, path, body, timeout)
            except ConnectionDropped:
                if reused and not conn.got_bytes:
                    # the server closed an idle keep-alive connection under us: one fresh try
                    conn = await self._connect()
                    return await self._send(conn, method, path, body, timeout)
                raise

    async def _send(self, conn: _Conn, method: str, path: str, body: bytes, timeout: float | None) -> Response:
        head = (f"{method} {path} HTTP/1.1\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n").encode() + self._head_tail + b"\r\n"
        loop = asyncio.get_running_loop()
        waiter = conn.waiter = loop.create_future()
        limit = timeout if timeout is not None else self.timeout
        # a bare timer on the future (cheaper than asyncio.wait_for, which wraps it per request)
        timer = loop.call_later(limit, _expire, waiter, f"no complete response from {self.host}:{self.port} "
                                                        f"within {limit:.1f}s")
        conn.transport.write(head + body if body else head)
        try:
            resp = await waiter
        except BaseException:
            conn.transport.abort()
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if conn.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn.transport.close()
        return resp

    async def post(self, path: str, content: bytes | str = b"", timeout: float | None = None) -> Response:
        if isinstance(content, str):
            content = content.encode()
        return await self.request("POST", path, content, timeout)

    async def get(self, path: str, timeout: float | None = None) -> Response:
        return await self.request("GET", path, b"", timeout)

    async def aclose(self) -> None:
        for c in self._idle:
            c.transport.close()
        self._idle.clear()
