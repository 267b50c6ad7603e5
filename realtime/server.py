"""The thin transport: WebSocket and HTTP routes around sans-I/O sessions and the engine worker."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .engine.port import Engine, EngineCommand, EngineOutput, OutputSink
from .metrics import METRICS_CONTENT_TYPE, ServerMetrics, SessionMetrics
from .protocol.codec import encode_server_event
from .protocol.ids import IdFactory
from .session.session import Session, SessionLimits
from .session.settings import SessionSettings
from .web_files import default_web_dir

log = logging.getLogger(__name__)

REALTIME_PATHS = {"/v1/realtime", "/realtime"}
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
WEB_DIR = default_web_dir()


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_sessions: int = 16
    # OpenAI allows 15 MiB per append; larger frames still arrive so an oversized image gets an error event.
    max_message_bytes: int = 64 * 1024 * 1024
    web_dir: Path = WEB_DIR
    session_defaults: SessionSettings = field(default_factory=SessionSettings)
    # Feed spoken turns to the engine while they are spoken (off: encode the whole turn after commit).
    streaming_prefill: bool = True
    limits: SessionLimits = field(default_factory=SessionLimits)
    # Serving the random-weight demo checkpoint: /healthz says so and the page shows a banner.
    demo_model: bool = False
    # A socket bound in advance (the CLI binds before the model loads); host and port are then unused.
    listener: socket.socket | None = None
    # TLS for https:// and wss:// on the same port.
    ssl_context: ssl.SSLContext | None = None
    # Bearer token GET /metrics requires; None leaves it open like /healthz.
    metrics_token: str | None = None


_CLOSED = object()


class RealtimeServer:
    def __init__(self, config: ServerConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._ids = IdFactory()
        self._sessions: set[str] = set()
        self._started_at = time.monotonic()
        self.metrics = ServerMetrics(engine.health)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Server]:
        listener = self.config.listener
        async with serve(
            self._handle,
            None if listener else self.config.host,
            None if listener else self.config.port,
            sock=listener,
            ssl=self.config.ssl_context,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            max_size=self.config.max_message_bytes,
            # The SDK turns compression off; so do we, deltas are small and latency matters.
            compression=None,
        ) as server:
            yield server

    # HTTP ---------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in REALTIME_PATHS:
            if not self._authorized(request.headers):
                log.info("rejected a connection without a valid API key")
                return _response(
                    HTTPStatus.UNAUTHORIZED, b'{"error":"invalid or missing API key"}', "application/json"
                )
            return None
        if path == "/metrics":
            return self._metrics(request.headers)
        if path == "/healthz":
            return _response(HTTPStatus.OK, json.dumps(self.health()).encode(), "application/json")
        return self._static(path)

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
            "sessions": len(self._sessions),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
        }

    def _metrics(self, headers: Headers) -> Response:
        token = self.config.metrics_token
        offered = headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token and not hmac.compare_digest(offered.encode(), token.encode()):
            return _response(
                HTTPStatus.UNAUTHORIZED, b'{"error":"invalid or missing metrics token"}', "application/json"
            )
        return _response(HTTPStatus.OK, self.metrics.render(), METRICS_CONTENT_TYPE)

    def _authorized(self, headers: Headers) -> bool:
        expected = self.config.api_key
        if not expected:
            return True
        offered = [headers.get("Authorization", "").removeprefix("Bearer ").strip()]
        for value in headers.get_all("Sec-WebSocket-Protocol"):
            offered += [
                p.strip().removeprefix(KEY_SUBPROTOCOL_PREFIX)
                for p in value.split(",")
                if p.strip().startswith(KEY_SUBPROTOCOL_PREFIX)
            ]
        return any(hmac.compare_digest(key.encode(), expected.encode()) for key in offered if key)

    def _static(self, path: str) -> Response:
        root = self.config.web_dir.resolve()
        target = (root / (path.lstrip("/") or "index.html")).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return _response(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return _response(HTTPStatus.OK, target.read_bytes(), content_type)

    # WebSocket ----------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        if len(self._sessions) >= self.config.max_sessions:
            await connection.close(1013, "server busy: too many sessions")
            return
        session = Session(
            self._ids.new("sess"),
            self.config.session_defaults,
            ids=self._ids,
            limits=self.config.limits,
            stream_turns=self.config.streaming_prefill,
        )
        beta_names = "realtime=v1" in (
            connection.request.headers.get("OpenAI-Beta", "") if connection.request else ""
        )
        self._sessions.add(session.id)
        observed = self.metrics.open_session()
        log.info("session %s opened", session.id)
        inbox: asyncio.Queue[object] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def engine_sink(output: EngineOutput) -> None:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, output)
            except RuntimeError:
                pass  # the event loop has closed: nobody is left to read this output

        reader = asyncio.create_task(_read_into(connection, inbox))
        started_ms = loop.time() * 1000
        try:
            session.start()
            while True:
                await self._flush(connection, session, observed, engine_sink, beta_names)
                received = await inbox.get()
                if received is _CLOSED:
                    break
                if isinstance(received, (str, bytes)):
                    session.receive_message(received, int(loop.time() * 1000 - started_ms))
                else:
                    session.receive_engine_output(received)  # type: ignore[arg-type]
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            session.close()
            _, commands = session.drain()
            self._dispatch(commands, engine_sink)
            self._sessions.discard(session.id)
            observed.close()
            log.info("session %s closed", session.id)

    async def _flush(
        self, connection: ServerConnection, session: Session, observed: SessionMetrics, sink, beta_names: bool
    ) -> None:
        events, commands = session.drain()
        observed.observe(events, session.audio_received_ms)
        self._dispatch(commands, sink)
        for event in events:
            await connection.send(encode_server_event(event, beta_names=beta_names))

    def _dispatch(self, commands: list[EngineCommand], sink: OutputSink) -> None:
        for command in commands:
            self.engine.send(command, sink)


async def _read_into(connection: ServerConnection, inbox: asyncio.Queue[object]) -> None:
    try:
        async for message in connection:
            inbox.put_nowait(message)
    except ConnectionClosed:
        pass
    finally:
        inbox.put_nowait(_CLOSED)


def _select_subprotocol(connection: ServerConnection, offered: list[str]) -> str | None:
    # Browsers fail the handshake unless one offered subprotocol is echoed; the SDK offers none
    # and fails if one is echoed anyway.
    return "realtime" if "realtime" in offered else None


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return Response(status.value, status.phrase, headers, body)
