"""The local engine: one thread owns the model backend; every MLX call in the process happens there."""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .port import (
    AbandonAudioTurn,
    AppendAudioTurn,
    AudioTurnStart,
    BeginAudioTurn,
    CancelGeneration,
    CloseSession,
    EngineCommand,
    EngineHealth,
    EngineOutput,
    GenerationDone,
    GenerationRequest,
    OutputSink,
    StartGeneration,
    StartTranscription,
    TranscriptionRequest,
    Usage,
)

log = logging.getLogger(__name__)

ShouldStop = Callable[[], bool]
_TRANSCRIPTION = "transcription"
# A unit of work that produced nothing to deliver (a prefill chunk, a hidden token) yields None.
BackendStep = EngineOutput | None
# The engine thread runs Python almost without pause (it builds every step's graph), and Python hands the GIL
# to a thread that asks for it only after the switch interval: with the default 5 ms, each output waited that
# long before the event loop could send it (measured on an H200 at E2B shapes: 5 ms from the engine's sink to
# the loop, every time). Half a millisecond keeps the wait short and the switches rare.
GIL_SWITCH_INTERVAL_S = 0.0005


class Backend(Protocol):
    """A model behind the engine thread. Every method is called on that one thread only."""

    name: str
    # Tokens a prompt and its answer may hold together; set by load() at the latest (None: unknown).
    context_tokens: int | None

    def load(self) -> None:
        """Load weights and warm up every modality once."""

    def generate(self, request: GenerationRequest, should_stop: ShouldStop) -> Iterator[BackendStep]:
        """Yield after each unit of work (a prefill chunk or one token), so the worker can interleave
        sessions. Yields TextDelta, ToolCall or None, and ends with exactly one GenerationDone; checks
        should_stop() before every unit and then ends with stop_reason "cancelled"."""

    def transcribe(self, request: TranscriptionRequest, should_stop: ShouldStop) -> Iterator[BackendStep]:
        """As generate(), for a transcription of the request's clips; leaves the session's cache alone."""

    def drop_session(self, session_id: str) -> None:
        """Free the session's conversation cache."""

    def begin_audio_turn(self, start: AudioTurnStart) -> Iterator[None]:
        """Start a streamed turn; one yield per unit of work. A later generate() whose last turn is this
        one (same item id, images and audio key) reuses everything prefilled for it; any other request
        first rolls the cache back to where it stood before the turn."""

    def append_audio_turn(self, session_id: str, samples: np.ndarray) -> Iterator[None]:
        """More of the streamed turn's audio (16 kHz float32, following what came before)."""

    def abandon_audio_turn(self, session_id: str) -> None:
        """The streamed turn will not be committed: return the cache exactly to its state before it."""

    def finish_step(self) -> None:
        """Called once per engine step, after every session's job took its unit: runs the work those
        units queued together (one encoder pass, prefill forwards of equal chunks, one decode forward)."""


@dataclass
class _Job:
    """One piece of a session's work: a generation, a transcription, or a step of streaming prefill."""

    session_id: str
    start: Callable[[ShouldStop], Iterator[BackendStep]]
    sink: OutputSink | None = None
    response_id: str | None = None
    cancelled: bool = False
    steps: Iterator[BackendStep] | None = None
    # Transcriptions wait in a lane of their own, taking turns with the session's answer instead of
    # queueing behind it or ahead of it.
    lane: str = ""
    # For streamed audio: the samples of every push it stands for (pushes queued behind each other merge).
    audio: list[np.ndarray] = field(default_factory=list)

    @property
    def queue_key(self) -> str:
        return f"{self.session_id}\0{self.lane}" if self.lane else self.session_id

    def close(self) -> None:
        if self.steps is not None:
            self.steps.close()


@dataclass(frozen=True)
class _Stop:
    pass


_Command = _Job | CancelGeneration | CloseSession | _Stop


@dataclass
class EngineWorker:
    """The local engine (implements port.Engine): owns the backend on one thread, as MLX streams are
    thread-local since MLX 0.31.

    Each session's jobs run in order. One engine step advances every session's current job by one unit
    (a prefill chunk, a token), then lets the backend run what they queued together, so answers decode
    in one batch and a long prefill delays the others by one chunk. Commands (cancel, close) apply
    between steps. Sinks are called on the engine thread; the transport wraps them with
    loop.call_soon_threadsafe.
    """

    backend: Backend
    _commands: queue.SimpleQueue[_Command] = field(default_factory=queue.SimpleQueue)
    _queues: dict[str, deque[_Job]] = field(default_factory=dict)
    _ready: threading.Event = field(default_factory=threading.Event)
    _load_error: BaseException | None = None
    _thread: threading.Thread | None = None
    _died: bool = False
    # Held while a request is checked and queued, and while a dying thread drains the queue: a request
    # queued as the thread dies is either answered by the drain or refused at once, never left waiting.
    _queueing: threading.Lock = field(default_factory=threading.Lock)
    loaded: bool = False
    # Written on the engine thread after each step, read by health() from any thread.
    _queue_depth: int = 0
    _batch_size: int = 0

    def start(self, timeout_s: float | None = None) -> None:
        """Start the thread and block until the model is loaded and warm."""
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the engine did not finish loading in time")
        if self._load_error is not None:
            raise RuntimeError(f"the engine failed to load: {self._load_error}") from self._load_error

    def send(self, command: EngineCommand, sink: OutputSink) -> None:
        with self._queueing:
            if self.alive or not isinstance(command, StartGeneration | StartTranscription):
                self._commands.put(self._to_job(command, sink))
                return
        # Fail fast: nothing would ever answer a request queued to a dead thread.
        sink(GenerationDone(_request_id(command), "error", Usage(), "the engine is not running"))

    def health(self) -> EngineHealth:
        detail = None if self.alive else "the engine thread is not running"
        return EngineHealth(
            loaded=self.loaded,
            alive=self.alive,
            model=self.backend.name,
            detail=detail,
            queue_depth=self._queue_depth,
            batch_size=self._batch_size,
            # A backend that does not report its context leaves it unknown: sessions then never truncate.
            context_tokens=getattr(self.backend, "context_tokens", None),
        )

    @property
    def alive(self) -> bool:
        return self.loaded and not self._died and self._thread is not None and self._thread.is_alive()

    def _to_job(self, command: EngineCommand, sink: OutputSink) -> _Command:
        backend = self.backend
        if isinstance(command, StartGeneration):
            request = command.request
            steps = lambda stop: backend.generate(request, stop)  # noqa: E731
            return _Job(request.session_id, steps, sink, request.response_id)
        if isinstance(command, StartTranscription):
            transcription = command.request
            steps = lambda stop: backend.transcribe(transcription, stop)  # noqa: E731
            return _Job(transcription.session_id, steps, sink, transcription.request_id, lane=_TRANSCRIPTION)
        if isinstance(command, BeginAudioTurn):
            start = command.start
            return _Job(start.session_id, lambda stop: backend.begin_audio_turn(start))
        if isinstance(command, AppendAudioTurn):
            session_id = command.session_id
            job = _Job(
                session_id, lambda stop: backend.append_audio_turn(session_id, np.concatenate(job.audio))
            )
            job.audio.append(command.samples)
            return job
        if isinstance(command, AbandonAudioTurn):
            session_id = command.session_id

            def abandon(stop: ShouldStop) -> Iterator[None]:
                backend.abandon_audio_turn(session_id)
                yield None

            return _Job(session_id, abandon)
        return command

    def stop(self) -> None:
        self._commands.put(_Stop())
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self.backend.load()
            self.loaded = True
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            # The starting thread reports it (one line from the CLI); the traceback is for DEBUG.
            log.debug("engine load failed", exc_info=True)
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while self._apply_commands():
                if self._queues:
                    self._step_every_session()
                self._queue_depth = sum(len(jobs) for jobs in self._queues.values())
                # Every session with work takes one unit per step; the decoding ones share one forward.
                self._batch_size = len(self._queues)
        except BaseException:  # noqa: BLE001 - logged here; the thread ends and health() reports it
            log.critical("the engine thread died; every request from now on fails", exc_info=True)
            self._fail_outstanding("the engine thread died")

    def _fail_outstanding(self, message: str) -> None:
        # Nothing will step these any more: each waiting response gets its one GenerationDone now.
        waiting = [job for jobs in self._queues.values() for job in jobs]
        self._queues.clear()
        with self._queueing:
            self._died = True
            while True:
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    break
                if isinstance(command, _Job):
                    waiting.append(command)
        for job in waiting:
            if job.sink is not None:
                self._fail(job, message)

    def _apply_commands(self) -> bool:
        # Block only when idle; between steps just take what has arrived.
        block = not self._queues
        while True:
            try:
                command = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            if isinstance(command, _Stop):
                # Close unfinished work here, on the engine thread, not later in a garbage collector.
                for jobs in self._queues.values():
                    for job in jobs:
                        job.close()
                self._queues.clear()
                return False
            if isinstance(command, _Job):
                self._queue(command)
            elif isinstance(command, CancelGeneration):
                for jobs in self._queues.values():
                    for job in jobs:
                        if job.response_id == command.response_id:
                            job.cancelled = True
            else:
                self._drop_session(command.session_id)

    def _queue(self, job: _Job) -> None:
        jobs = self._queues.setdefault(job.queue_key, deque())
        last = jobs[-1] if jobs else None
        if job.audio and last is not None and last.audio and last.steps is None:
            # Pushes that arrived while the engine was busy are heard in one go: fewer, larger steps.
            last.audio.extend(job.audio)
            return
        jobs.append(job)

    def _drop_session(self, session_id: str) -> None:
        # Unfinished work of a closed session is stopped here, not stepped to its end.
        for key in (session_id, f"{session_id}\0{_TRANSCRIPTION}"):
            for job in self._queues.pop(key, ()):
                job.close()
        self.backend.drop_session(session_id)

    def _step_every_session(self) -> None:
        order = list(self._queues)
        for queue_key in order:
            jobs = self._queues[queue_key]
            if not self._step(jobs[0]):
                jobs.popleft()
            if not jobs:
                del self._queues[queue_key]
        if order[0] in self._queues:
            # The next step starts with another session, so none always comes first to the prefill budget.
            self._queues[order[0]] = self._queues.pop(order[0])
        try:
            self.backend.finish_step()
        except Exception:  # noqa: BLE001 - the requests that queued work see its failure themselves
            log.exception("engine step failed")

    def _step(self, job: _Job) -> bool:
        """Run one unit of the job's work; False once it has finished."""
        try:
            if job.steps is None:
                job.steps = job.start(lambda: job.cancelled)
            output = next(job.steps)
        except StopIteration:
            # Streaming work simply ends; a generation must have ended with its GenerationDone.
            if job.sink is not None:
                self._fail(job, "the backend ended without a result")
            return False
        except Exception as exc:  # noqa: BLE001 - a failed request must not take the thread down
            log.exception("engine work for session %s failed", job.session_id)
            self._fail(job, str(exc))
            return False
        if output is not None:
            self._deliver(job, output)
        return not isinstance(output, GenerationDone)

    def _fail(self, job: _Job, message: str) -> None:
        self._deliver(job, GenerationDone(job.response_id or "", "error", Usage(), message))

    def _deliver(self, job: _Job, output: EngineOutput) -> None:
        if job.sink is None:
            return
        try:
            job.sink(output)
        except Exception:  # noqa: BLE001 - one session's transport must not stop the engine
            log.exception("delivering engine output for session %s failed", job.session_id)


def _request_id(command: StartGeneration | StartTranscription) -> str:
    if isinstance(command, StartGeneration):
        return command.request.response_id
    return command.request.request_id
