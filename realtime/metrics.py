"""Prometheus metrics: what the transport sees in each session's drained events, plus the engine's load.

The session stays sans-I/O and knows nothing of this: the transport hands every batch of drained events
to the session's SessionMetrics, which reads the clock and updates the server's registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .engine.port import EngineHealth
from .protocol import server_events as se

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
Clock = Callable[[], float]
# From a fast local answer (tens of ms) to a cold first start of a large model.
FIRST_DELTA_BUCKETS_S = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500)


class ServerMetrics:
    """One registry per server, so several servers in one process (tests) never share counts."""

    def __init__(self, engine_health: Callable[[], EngineHealth], clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        registry = self.registry
        self.sessions_open = Gauge("mlx_realtime_sessions_open", "Sessions connected now", registry=registry)
        self.sessions = Counter("mlx_realtime_sessions", "Sessions opened", registry=registry)
        self.turns = Counter(
            "mlx_realtime_turns", "User turns added to conversations", ["kind"], registry=registry
        )
        self.responses = Counter(
            "mlx_realtime_responses", "Responses finished, by final status", ["status"], registry=registry
        )
        self.output_tokens = Counter("mlx_realtime_output_tokens", "Tokens generated", registry=registry)
        self.first_delta_s = Histogram(
            "mlx_realtime_time_to_first_delta_seconds",
            "From response.created to its first text delta",
            buckets=FIRST_DELTA_BUCKETS_S,
            registry=registry,
        )
        self.tokens_per_s = Histogram(
            "mlx_realtime_output_tokens_per_second",
            "Decode rate of each response, from its first delta to response.done",
            buckets=TOKENS_PER_S_BUCKETS,
            registry=registry,
        )
        self.audio_s = Counter(
            "mlx_realtime_audio_input_seconds", "Seconds of client audio ingested", registry=registry
        )
        self.errors = Counter(
            "mlx_realtime_errors", "Error events sent to clients, by code", ["code"], registry=registry
        )
        registry.register(_EngineLoad(engine_health))

    def open_session(self) -> SessionMetrics:
        self.sessions.inc()
        self.sessions_open.inc()
        return SessionMetrics(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class SessionMetrics:
    """One session's share: its responses' timing and how much of its audio has been counted."""

    def __init__(self, server: ServerMetrics) -> None:
        self._server = server
        self._created_at: dict[str, float] = {}
        self._first_delta_at: dict[str, float] = {}
        self._audio_counted_ms = 0
        self._closed = False

    def observe(self, events: Iterable[se.ServerEvent], audio_received_ms: int) -> None:
        """Called with each batch of drained events and the session's audio clock after it."""
        now = self._server.clock()
        for event in events:
            self._observe_event(event, now)
        if audio_received_ms > self._audio_counted_ms:
            self._server.audio_s.inc((audio_received_ms - self._audio_counted_ms) / 1000)
            self._audio_counted_ms = audio_received_ms

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.sessions_open.dec()

    def _observe_event(self, event: se.ServerEvent, now: float) -> None:
        server = self._server
        if isinstance(event, se.ResponseCreated):
            self._created_at[event.response.id] = now
        elif isinstance(event, se.ResponseOutputTextDelta):
            self._first_delta(event.response_id, now)
        elif isinstance(event, se.ResponseDone):
            self._response_done(event.response, now)
        elif isinstance(event, se.ConversationItemAdded) and isinstance(event.item, se.MessageItemOut):
            # Function calls and their outputs are items too, with no role and no turn of their own.
            if event.item.role == "user":
                spoken = any(part.type == "input_audio" for part in event.item.content)
                server.turns.labels(kind="audio" if spoken else "text").inc()
        elif isinstance(event, se.Error):
            server.errors.labels(code=event.error.code or event.error.type).inc()

    def _first_delta(self, response_id: str, now: float) -> None:
        if response_id in self._first_delta_at:
            return
        self._first_delta_at[response_id] = now
        created = self._created_at.get(response_id)
        if created is not None:
            self._server.first_delta_s.observe(now - created)

    def _response_done(self, response: se.ResponseOut, now: float) -> None:
        server = self._server
        server.responses.labels(status=response.status).inc()
        self._created_at.pop(response.id, None)
        first_delta = self._first_delta_at.pop(response.id, None)
        n_tokens = response.usage.output_tokens if response.usage else 0
        server.output_tokens.inc(n_tokens)
        # The first token's time belongs to time-to-first-delta; the rate counts the ones after it.
        if first_delta is not None and n_tokens > 1 and now > first_delta:
            server.tokens_per_s.observe((n_tokens - 1) / (now - first_delta))


class _EngineLoad(Collector):
    """Asks the engine at scrape time, through the port's health(), so the engine needs no metrics code."""

    def __init__(self, engine_health: Callable[[], EngineHealth]) -> None:
        self._engine_health = engine_health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = self._engine_health()
        yield GaugeMetricFamily(
            "mlx_realtime_engine_queue_depth", "Engine work items queued or running", value=health.queue_depth
        )
        yield GaugeMetricFamily(
            "mlx_realtime_engine_batch_size",
            "Sequences the engine advanced in its last step",
            value=health.batch_size,
        )
        yield GaugeMetricFamily(
            "mlx_realtime_engine_alive", "1 while the engine can serve", value=1 if health.alive else 0
        )
