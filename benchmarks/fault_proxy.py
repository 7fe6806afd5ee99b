"""A fault-injecting HTTP proxy on 127.0.0.1, in front of a local S3-compatible server or HTTP range server,
for the object-storage fault tests and the remote-read benchmark. It runs its own event loop in a thread of
the caller, so a test turns faults on and off while its loaders read through it.

Faults, each counted in `counts`:
- throttle(fraction, status): that share of requests (drawn from a seeded generator) is answered 503 with
  S3's `SlowDown` error (or 429), the way a busy bucket answers;
- reset_next(n): the next n responses with a body send half of it, then the connection is reset;
- stall_next(n, seconds): the next n requests wait that long before an answer (past a read timeout);
- down(seconds): the port refuses connections for that long, then serves again (a server restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Iterator

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your '
            b'request rate.</Message><RequestId>fault-proxy</RequestId></Error>')
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate",
              "proxy-authorization", "content-encoding"}


class FaultProxy:
    def __init__(self, upstream: str, port: int, seed: int = 0):
        self.upstream, self.port = upstream.rstrip("/"), port
        self.url = f"http://127.0.0.1:{port}"
        self.counts: Counter = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._throttle, self._status = 0.0, 503
        self._resets, self._stalls, self._stall_s = 0, 0, 0.0
        self._down = False  # connections kept alive from before a down() are cut too
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-proxy")
        self._runner = self._site = self._session = None

    # ------------------------------------------------------------------ control (any thread)

    def throttle(self, fraction: float, status: int = 503) -> None:
        with self._lock:
            self._throttle, self._status = fraction, status

    def reset_next(self, n: int) -> None:
        with self._lock:
            self._resets = n

    def stall_next(self, n: int, seconds: float) -> None:
        with self._lock:
            self._stalls, self._stall_s = n, seconds

    def down(self, seconds: float | None) -> None:
        """Refuses connections for `seconds` (None: until up()), then serves again."""
        self._down = True
        self._call(self._site.stop())
        self.counts["down"] += 1
        if seconds is not None:
            threading.Timer(seconds, self.up).start()

    def up(self) -> None:
        self._call(self._listen())
        self._down = False

    def clear(self) -> None:
        with self._lock:
            self._throttle, self._resets, self._stalls = 0.0, 0, 0

    # ------------------------------------------------------------------ the proxy

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _listen(self) -> None:
        from aiohttp import web

        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()

    def _draw(self) -> tuple[bool, bool, float]:
        with self._lock:
            self.counts["requests"] += 1
            throttled = self._throttle > 0 and self._rng.random() < self._throttle
            stall = 0.0
            if not throttled and self._stalls > 0:
                self._stalls -= 1
                stall = self._stall_s
            return throttled, stall > 0, stall

    async def _handle(self, request):
        from aiohttp import web

        if self._down:  # a request on a connection opened before the server went down
            request.transport.abort()
            raise ConnectionResetError("the server is down")
        throttled, stalled, stall_s = self._draw()
        if throttled:
            self.counts["throttled"] += 1
            if self._status == 503:
                return web.Response(status=503, body=SLOWDOWN, content_type="application/xml")
            return web.Response(status=self._status, text="Too Many Requests")
        if stalled:
            self.counts["stalled"] += 1
            await asyncio.sleep(stall_s)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None, allow_redirects=False) as up:
            data = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
            reset = False
            with self._lock:
                if self._resets > 0 and request.method == "GET" and len(data) > 1:
                    self._resets -= 1
                    reset = True
            response = web.StreamResponse(status=up.status, headers=out_headers)
            if "Content-Length" in up.headers:
                response.content_length = int(up.headers["Content-Length"])
            await response.prepare(request)
            if reset:
                self.counts["reset"] += 1
                await response.write(data[: len(data) // 2])
                request.transport.abort()  # the rest never comes: the connection is reset mid-body
                return response
            if request.method != "HEAD":
                await response.write(data)
            await response.write_eof()
            return response

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        with contextlib.suppress(Exception):
            self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def fault_proxy(upstream: str, seed: int = 0) -> Iterator[FaultProxy]:
    from benchmarks.local_servers import free_port

    proxy = FaultProxy(upstream, free_port(), seed).start()
    try:
        yield proxy
    finally:
        proxy.stop()
