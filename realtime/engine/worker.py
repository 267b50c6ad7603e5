"""The engine thread: every MLX call in the process happens here, one step of one request at a time."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .interface import Backend, EngineOutput, GenerationDone, GenerationRequest, Usage

log = logging.getLogger(__name__)

OutputSink = Callable[[EngineOutput], None]


@dataclass
class _Job:
    request: GenerationRequest
    sink: OutputSink
    cancelled: bool = False
    steps: Iterator[EngineOutput] | None = None


@dataclass(frozen=True)
class _Submit:
    request: GenerationRequest
    sink: OutputSink


@dataclass(frozen=True)
class _Cancel:
    response_id: str


@dataclass(frozen=True)
class _DropSession:
    session_id: str


@dataclass(frozen=True)
class _Stop:
    pass


_Command = _Submit | _Cancel | _DropSession | _Stop


@dataclass
class EngineWorker:
    """Owns the backend on one thread (MLX streams are thread-local) and round-robins requests.

    Sinks are called on the engine thread; the transport wraps them with loop.call_soon_threadsafe.
    """

    backend: Backend
    _commands: queue.SimpleQueue[_Command] = field(default_factory=queue.SimpleQueue)
    _jobs: deque[_Job] = field(default_factory=deque)
    _ready: threading.Event = field(default_factory=threading.Event)
    _load_error: BaseException | None = None
    _thread: threading.Thread | None = None
    loaded: bool = False

    def start(self, timeout_s: float | None = None) -> None:
        """Start the thread and block until the model is loaded and warm."""
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the engine did not finish loading in time")
        if self._load_error is not None:
            raise RuntimeError(
                f"the engine failed to load: {self._load_error}"
            ) from self._load_error

    def submit(self, request: GenerationRequest, sink: OutputSink) -> None:
        self._commands.put(_Submit(request, sink))

    def cancel(self, response_id: str) -> None:
        self._commands.put(_Cancel(response_id))

    def drop_session(self, session_id: str) -> None:
        self._commands.put(_DropSession(session_id))

    def stop(self) -> None:
        self._commands.put(_Stop())
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self.backend.load()
            self.loaded = True
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            log.exception("engine load failed")
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        while self._apply_commands():
            if self._jobs:
                self._step(self._jobs.popleft())

    def _apply_commands(self) -> bool:
        # Block only when idle; between steps just take what has arrived.
        block = not self._jobs
        while True:
            try:
                command = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            if isinstance(command, _Stop):
                # Close unfinished generations here, on the engine thread, not later in a collector.
                for job in self._jobs:
                    if job.steps is not None:
                        job.steps.close()
                self._jobs.clear()
                return False
            if isinstance(command, _Submit):
                self._jobs.append(_Job(command.request, command.sink))
            elif isinstance(command, _Cancel):
                for job in self._jobs:
                    if job.request.response_id == command.response_id:
                        job.cancelled = True
            else:
                self._drop_session(command.session_id)

    def _drop_session(self, session_id: str) -> None:
        # Unfinished requests of a closed session are stopped here, not stepped to their end.
        for job in [j for j in self._jobs if j.request.session_id == session_id]:
            self._jobs.remove(job)
            if job.steps is not None:
                job.steps.close()
        self.backend.drop_session(session_id)

    def _step(self, job: _Job) -> None:
        try:
            if job.steps is None:
                job.steps = self.backend.generate(job.request, lambda: job.cancelled)
            output = next(job.steps)
        except StopIteration:
            output = GenerationDone(
                job.request.response_id, "error", Usage(), "the backend ended without a result"
            )
        except Exception as exc:  # noqa: BLE001 - a failed request must not take the thread down
            log.exception("generation %s failed", job.request.response_id)
            output = GenerationDone(job.request.response_id, "error", Usage(), str(exc))
        job.sink(output)
        if not isinstance(output, GenerationDone):
            self._jobs.append(job)
