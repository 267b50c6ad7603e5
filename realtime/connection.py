"""One WebSocket connection's pump: reads and engine outputs in, session events out, flow-controlled."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from .engine.port import Engine, EngineOutput
from .metrics import SessionMetrics
from .protocol.codec import encode_server_event, peek_event_id
from .protocol.errors import ProtocolError
from .protocol.server_events import ServerEvent
from .session.session import Session

log = logging.getLogger(__name__)

# Close codes: transport matters only; everything else is an `error` event.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class FlowLimits:
    # Client bytes a connection may hold unprocessed; above it the socket is no longer read.
    max_inbox_bytes: int
    # How long one send may wait for a client that does not read before the connection is dropped.
    send_timeout_s: float


class InflightBudget:
    """Client bytes received and not yet handled, across all connections of one server."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.n_bytes = 0

    def try_take(self, n_bytes: int) -> bool:
        if self.n_bytes + n_bytes > self.max_bytes:
            return False
        self.n_bytes += n_bytes
        return True

    def give_back(self, n_bytes: int) -> None:
        self.n_bytes -= n_bytes


@dataclass(frozen=True)
class _Refused:
    error: ProtocolError


_CLOSED = object()
_InboxItem = str | bytes | EngineOutput | _Refused | object


class Inbox:
    """The connection's one queue. Engine outputs are always accepted (they are bounded by the answer);
    client messages wait for room, so a session that falls behind stops its socket being read."""

    def __init__(self, max_client_bytes: int) -> None:
        self._items: deque[_InboxItem] = deque()
        self._max_client_bytes = max_client_bytes
        self.client_bytes = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put_message(self, message: str | bytes) -> None:
        # One message is always let in, however large, so a limit below the message size cannot stall.
        while self.client_bytes and self.client_bytes + len(message) > self._max_client_bytes:
            self._room.clear()
            await self._room.wait()
        self.client_bytes += len(message)
        self._put(message)

    def put_nowait(self, item: _InboxItem) -> None:
        self._put(item)

    async def get(self) -> _InboxItem:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, (str, bytes)):
            self.client_bytes -= len(item)
            self._room.set()
        return item

    def _put(self, item: _InboxItem) -> None:
        self._items.append(item)
        self._ready.set()


class SlowClient(Exception):
    """The client stopped reading: a send stayed blocked for longer than the send timeout."""


class Connection:
    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        session: Session,
        engine: Engine,
        *,
        limits: FlowLimits,
        budget: InflightBudget,
        beta_names: bool,
        observer: SessionMetrics,
    ) -> None:
        self._request = request
        self.ws = ws
        self.session = session
        self._engine = engine
        self._limits = limits
        self._budget = budget
        self._beta_names = beta_names
        self._observer = observer
        self._inbox = Inbox(limits.max_inbox_bytes)
        self._loop = asyncio.get_running_loop()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        started_ms = self._loop.time() * 1000
        try:
            self.session.start()
            while await self._flush():
                received = await self._inbox.get()
                if received is _CLOSED:
                    break
                if isinstance(received, (str, bytes)):
                    self.session.receive_message(received, int(self._loop.time() * 1000 - started_ms))
                    self._budget.give_back(len(received))
                elif isinstance(received, _Refused):
                    self.session.refuse_message(received.error)
                else:
                    self.session.receive_engine_output(received)  # type: ignore[arg-type]
        except SlowClient:
            log.warning("session %s: the client stopped reading; closing it", self.session.id)
            reason = f"client stopped reading: a send was blocked for {self._limits.send_timeout_s:g} s"
            await self.close(CLOSE_POLICY, reason)
        finally:
            reader.cancel()
            self._release_inbox()
            self.session.close()
            self._dispatch()
            self._observer.close()

    async def close(self, code: int, reason: str) -> None:
        """Close with a code; a client that does not read or answer gets its socket dropped instead."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(code=code, message=reason.encode())
        except TimeoutError:
            pass
        finally:
            abort_transport(self._request)

    def _sink(self, output: EngineOutput) -> None:
        try:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, output)
        except RuntimeError:
            pass  # the event loop has closed: nobody is left to read this output

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._admit(message.data)
        finally:
            self._inbox.put_nowait(_CLOSED)
            if self.ws.closed:
                # A keepalive timeout closed the socket: a send blocked on it must not wait any longer.
                abort_transport(self._request)

    async def _admit(self, data: str | bytes) -> None:
        if self._budget.try_take(len(data)):
            try:
                await self._inbox.put_message(data)
            except BaseException:
                self._budget.give_back(len(data))
                raise
            return
        error = ProtocolError(
            "server_busy",
            "The server holds too much unhandled client data right now (--max-inflight-bytes); this event "
            "was not handled. Send it again later.",
            event_id=peek_event_id(data),
        )
        self._inbox.put_nowait(_Refused(error))

    async def _flush(self) -> bool:
        """Send what the session emitted; False once the socket is closed."""
        events = self._dispatch()
        for event in events:
            if self.ws.closed:
                return False
            try:
                async with asyncio.timeout(self._limits.send_timeout_s):
                    await self.ws.send_str(encode_server_event(event, beta_names=self._beta_names))
            except TimeoutError:
                raise SlowClient from None
            except ConnectionError:
                return False
        return not self.ws.closed

    def _dispatch(self) -> list[ServerEvent]:
        events, commands = self.session.drain()
        self._observer.observe(events, self.session.audio_received_ms)
        for command in commands:
            self._engine.send(command, self._sink)
        return events

    def _release_inbox(self) -> None:
        self._budget.give_back(self._inbox.client_bytes)
        self._inbox.client_bytes = 0


def abort_transport(request: web.Request) -> None:
    """Drop the socket without flushing: a client that does not read would keep a graceful close pending."""
    transport = request.transport
    if transport is not None and transport.get_write_buffer_size() > 0:
        transport.abort()
