"""A lean asyncio network backend for httpcore (the connection layer under httpx).

httpx talks to sockets through httpcore, and httpcore on asyncio goes through anyio: every read
and write opens a cancel scope for its timeout, every keep-alive reuse asks the socket whether it
is readable with a `select` call, every stream attribute goes through anyio's typed-attribute
lookup. For a client doing thousands of small requests a second that is a large share of its CPU
(bench/RESULTS.md). This backend implements httpcore's public `AsyncNetworkBackend` interface on
plain asyncio protocols: a read waits on one future with one `call_later` timer, a write is a
non-blocking `transport.write` (waiting only when the kernel buffer is full), and readability is
known from the protocol's own state. TLS goes through `loop.start_tls`.

Used by `client.HttpxShard`; httpx keeps doing everything else (HTTP/1.1 via h11, pooling,
keep-alive, TLS verification settings).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import typing

import httpcore


class _Proto(asyncio.Protocol):
    __slots__ = ("transport", "chunks", "waiter", "eof", "exc", "paused", "drain_waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.waiter: asyncio.Future | None = None
        self.eof = False
        self.exc: BaseException | None = None
        self.paused = False
        self.drain_waiter: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self):
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc) -> None:
        self.eof = True
        self.exc = exc
        self._wake()
        d = self.drain_waiter
        if d is not None and not d.done():
            d.set_result(None)

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        d = self.drain_waiter
        if d is not None and not d.done():
            d.set_result(None)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, proto: _Proto) -> None:
        self._transport = transport
        self._proto = proto

    async def _wait(self, fut: asyncio.Future, timeout: float | None, exc_type) -> None:
        timer = None
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            await fut
        except TimeoutError:
            raise exc_type(f"no data for {timeout:.1f}s") from None
        finally:
            if timer is not None:
                timer.cancel()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._proto
        if not p.chunks:
            if p.eof:
                if p.exc is not None:
                    raise httpcore.ReadError(str(p.exc) or type(p.exc).__name__)
                return b""
            p.waiter = asyncio.get_running_loop().create_future()
            try:
                await self._wait(p.waiter, timeout, httpcore.ReadTimeout)
            finally:
                p.waiter = None
            if not p.chunks:
                if p.exc is not None:
                    raise httpcore.ReadError(str(p.exc) or type(p.exc).__name__)
                return b""
        data = p.chunks[0] if len(p.chunks) == 1 else b"".join(p.chunks)
        if len(data) > max_bytes:
            p.chunks = [data[max_bytes:]]
            return data[:max_bytes]
        p.chunks = []
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        p = self._proto
        if self._transport.is_closing() or p.eof and p.exc is not None:
            raise httpcore.WriteError("connection closed")
        self._transport.write(buffer)
        if p.paused:
            p.drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._wait(p.drain_waiter, timeout, httpcore.WriteTimeout)
            finally:
                p.drain_waiter = None

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            tr = await asyncio.wait_for(loop.start_tls(self._transport, self._proto, ssl_context,
                                                       server_hostname=server_hostname), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout}s") from None
        except (OSError, ssl.SSLError) as e:
            raise httpcore.ConnectError(str(e)) from e
        self._proto.transport = tr
        return AsyncioStream(tr, self._proto)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # an idle keep-alive connection is "readable" when the server sent something or hung
            # up: either way httpcore must not reuse it
            return bool(self._proto.chunks) or self._proto.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            tr, proto = await asyncio.wait_for(
                loop.create_connection(_Proto, host, port, local_addr=local), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} took over {timeout}s") from None
        except OSError as e:
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        sock = tr.get_extra_info("socket")
        if sock is not None:
            for opt in socket_options or ():
                sock.setsockopt(*opt)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return AsyncioStream(tr, proto)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            tr, proto = await asyncio.wait_for(loop.create_unix_connection(_Proto, path), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {path} took over {timeout}s") from None
        except OSError as e:
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        return AsyncioStream(tr, proto)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
