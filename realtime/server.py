"""The thin transport: one aiohttp app serves the realtime WebSocket, /healthz and web/ on one port."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import mimetypes
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .access import AccessPolicy, allowed_origin_set
from .connection import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, Connection, FlowLimits, InflightBudget
from .engine.port import Engine
from .metrics import METRICS_CONTENT_TYPE, ServerMetrics
from .protocol.errors import quote
from .protocol.ids import IdFactory
from .session.session import Session, SessionLimits
from .session.settings import SessionSettings
from .web_files import default_web_dir

log = logging.getLogger(__name__)

REALTIME_PATHS = ("/v1/realtime", "/realtime")
WEB_DIR = default_web_dir()
MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    # Browser origins allowed besides the server's own and loopback pages ("*" allows every origin).
    allowed_origins: tuple[str, ...] = ()
    max_sessions: int = 16
    # A 10 MiB image is ~14 MB of base64 and OpenAI allows 15 MiB per append: 16 MiB holds either.
    max_message_bytes: int = 16 * MIB
    # Client bytes received but not yet handled, summed over all sessions; past it events are refused.
    max_inflight_bytes: int = 64 * MIB
    # A send blocked this long (the client does not read) cancels the answer and drops the connection.
    send_timeout_s: float = 10.0
    # Keepalive: a ping this often; no pong within half of it closes the connection.
    ping_interval_s: float | None = 20.0
    # A connection that has not sent a whole request by then (or sits idle between HTTP requests) is closed.
    request_timeout_s: float = 10.0
    web_dir: Path = WEB_DIR
    session_defaults: SessionSettings = field(default_factory=SessionSettings)
    # Feed spoken turns to the engine while they are spoken (off: encode the whole turn after commit).
    streaming_prefill: bool = True
    limits: SessionLimits = field(default_factory=SessionLimits)
    # TLS for https:// and wss:// on the same port.
    ssl_context: ssl.SSLContext | None = None
    # Serving the random-weight demo checkpoint: /healthz says so and the page shows a banner.
    demo_model: bool = False
    # A socket bound in advance (the CLI binds before the model loads); bind() adopts it.
    listener: socket.socket | None = None
    # Bearer token GET /metrics requires; None leaves it open like /healthz.
    metrics_token: str | None = None


class RealtimeServer:
    """More routes go on `app.router` (or in `extra_routes`) before `serve()`; they win over static files."""

    def __init__(
        self, config: ServerConfig, engine: Engine, *, extra_routes: Iterable[web.AbstractRouteDef] = ()
    ) -> None:
        if config.max_inflight_bytes < config.max_message_bytes:
            raise ValueError(
                "max_inflight_bytes must be at least max_message_bytes, or large messages never pass"
            )
        self.config = config
        self.engine = engine
        self._access = AccessPolicy(config.api_key, allowed_origin_set(config.allowed_origins))
        self._budget = InflightBudget(config.max_inflight_bytes)
        self._ids = IdFactory()
        self._connections: dict[str, Connection] = {}
        self._started_at = time.monotonic()
        self.metrics = ServerMetrics(engine.health)
        self._socket: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=config.max_message_bytes)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        for path in REALTIME_PATHS:
            self.app.router.add_get(path, self._realtime)
        self.app.router.add_routes(list(extra_routes))

    @property
    def port(self) -> int:
        assert self._socket is not None, "bind() first"
        return self._socket.getsockname()[1]

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._socket] if self._socket is not None else []

    def bind(self) -> int:
        """Take the listening socket (connections queue until serve()); returns the bound port."""
        if self.config.listener is not None:
            self._socket = self.config.listener
            return self.port
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        self._socket = socket.create_server((self.config.host, self.config.port), family=family, backlog=128)
        return self.port

    async def serve(self) -> None:
        """Start answering on the bound socket."""
        if self._socket is None:
            self.bind()
        # The catch-all static route comes last, so routes added before serving take precedence.
        self.app.router.add_get("/{path:.*}", self._static)
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=5,
            keepalive_timeout=self.config.request_timeout_s,
        )
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket, ssl_context=self.config.ssl_context).start()

    async def shutdown(self) -> None:
        """Close every session with 1001 (their answers are cancelled), then stop serving."""
        closing = [
            c.close(CLOSE_GOING_AWAY, "server shutting down") for c in list(self._connections.values())
        ]
        await asyncio.gather(*closing, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        elif self._socket is not None:
            self._socket.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RealtimeServer]:
        await self.serve()
        try:
            yield self
        finally:
            await self.shutdown()

    # HTTP ---------------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return _response(200, json.dumps(self.health()).encode(), "application/json")

    def health(self) -> dict[str, object]:
        engine = self.engine.health()
        status = "ok" if engine.alive else ("failed" if engine.loaded else "loading")
        return {
            "status": status,
            "model_loaded": engine.loaded,
            "engine_alive": engine.alive,
            "model": engine.model,
            "demo_model": self.config.demo_model,
            "detail": engine.detail,
            "sessions": len(self._connections),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
        }

    async def _metrics(self, request: web.Request) -> web.Response:
        token = self.config.metrics_token
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token and not hmac.compare_digest(offered.encode(), token.encode()):
            return _response(401, b'{"error":"invalid or missing metrics token"}', "application/json")
        return _response(200, self.metrics.render(), METRICS_CONTENT_TYPE)

    async def _static(self, request: web.Request) -> web.Response:
        root = self.config.web_dir.resolve()
        target = (root / (request.match_info["path"].lstrip("/") or "index.html")).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return _response(404, b"not found", "text/plain")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return _response(200, target.read_bytes(), content_type)

    # WebSocket ----------------------------------------------------------------------------------

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refuse_handshake(request)
        if refusal is not None:
            return refusal
        ws = web.WebSocketResponse(
            # Browsers fail the handshake unless an offered subprotocol is echoed; the SDK offers none
            # and fails if one is echoed anyway. aiohttp echoes only what was offered.
            protocols=("realtime",),
            # The SDK turns compression off; so do we, deltas are small and latency matters.
            compress=False,
            max_msg_size=self.config.max_message_bytes,
            heartbeat=self.config.ping_interval_s,
        )
        if not ws.can_prepare(request).ok:
            return _response(426, b'{"error":"this path takes WebSocket connections"}', "application/json")
        await ws.prepare(request)
        if len(self._connections) >= self.config.max_sessions:
            await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"server busy: too many sessions")
            return ws
        await self._run_session(request, ws)
        return ws

    def _refuse_handshake(self, request: web.Request) -> web.Response | None:
        if not self._access.origin_allowed(request.headers):
            origin = quote(request.headers.get("Origin", ""))
            log.info("refused a connection from origin %s", origin)
            body = json.dumps({"error": f"origin not allowed: {origin}; see --allowed-origin"}).encode()
            return _response(403, body, "application/json")
        if not self._access.authorized(request.headers):
            log.info("rejected a connection without a valid API key")
            return _response(401, b'{"error":"invalid or missing API key"}', "application/json")
        return None

    async def _run_session(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        limits = self.config.limits
        if limits.context_tokens is None:
            limits = dataclasses.replace(limits, context_tokens=self.engine.health().context_tokens)
        session = Session(
            self._ids.new("sess"),
            self.config.session_defaults,
            ids=self._ids,
            limits=limits,
            stream_turns=self.config.streaming_prefill,
        )
        flow = FlowLimits(
            max_inbox_bytes=self.config.max_message_bytes, send_timeout_s=self.config.send_timeout_s
        )
        connection = Connection(
            request,
            ws,
            session,
            self.engine,
            limits=flow,
            budget=self._budget,
            beta_names="realtime=v1" in request.headers.get("OpenAI-Beta", ""),
            observer=self.metrics.open_session(),
        )
        self._connections[session.id] = connection
        log.info("session %s opened", session.id)
        try:
            await connection.run()
        finally:
            del self._connections[session.id]
            log.info("session %s closed", session.id)


def _response(status: int, body: bytes, content_type: str) -> web.Response:
    return web.Response(
        status=status, body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"}
    )
