"""The dashboard's HTTP server (aiohttp): the static page, a snapshot, and live updates as server-sent events.

Routes: ``/`` (the page), ``/static/<file>`` (its script and style, served from this package: no CDN, the
page works offline), ``/state`` (the snapshot as JSON), ``/events`` (``text/event-stream``: first a
``snapshot`` event, then ``bar``, ``signal`` and ``news`` events as they happen, payloads as
:mod:`adapters.web.parsing` defines them) and ``/healthz``.

A page that cannot keep up (its buffer of ``client_queue`` updates is full) is disconnected rather than
silently skipped past: the browser's EventSource reconnects by itself and starts again from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.web.config import DashboardSettings
from adapters.web.state import DashboardState, Update

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream


class _Client:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Update] = asyncio.Queue(size)
        self.overflowed = asyncio.Event()

    def offer(self, update: Update) -> None:
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.overflowed.set()


class DashboardServer:
    """Serves ``state`` on ``settings.host:settings.port`` (0: a free port, see :attr:`port`)."""

    def __init__(self, settings: DashboardSettings, state: DashboardState) -> None:
        self.settings = settings
        self.state = state
        self._clients: set[_Client] = set()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        state.listeners.append(self._broadcast)

    @property
    def port(self) -> int:
        assert self._port is not None, "not started"
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host  # noqa: S104 - a URL to show
        return f"http://{host}:{self.port}/"

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/state", self._state)
        app.router.add_get("/events", self._events)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self) -> DashboardServer:
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        for client in list(self._clients):
            client.overflowed.set()  # ends each stream
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _broadcast(self, update: Update) -> None:
        for client in list(self._clients):
            client.offer(update)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC / name
        # Only the files shipped beside this module, never a path out of it.
        if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
            raise web.HTTPNotFound(text=f"no static file {name!r}")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache", "Content-Type": _TYPES[path.suffix]})

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.snapshot())

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        })
        await response.prepare(request)
        client = _Client(self.settings.client_queue)
        self._clients.add(client)  # before the snapshot: nothing made after it is missed
        try:
            await response.write(_event("snapshot", self.state.snapshot()))
            while not client.overflowed.is_set():
                getter = asyncio.ensure_future(client.queue.get())
                stopper = asyncio.ensure_future(client.overflowed.wait())
                done, _ = await asyncio.wait({getter, stopper}, timeout=_KEEPALIVE_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    if not done:
                        await response.write(b": keep-alive\n\n")
                    continue
                kind, payload = getter.result()
                await response.write(_event(kind, payload))
            if client.queue.full():
                log.warning("a dashboard page fell %d updates behind; it reconnects and starts from a new snapshot",
                            client.queue.qsize())
        except ConnectionResetError:
            log.debug("a dashboard page closed its stream")
        finally:
            self._clients.discard(client)
        return response


def _event(kind: str, payload: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
