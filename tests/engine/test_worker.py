"""The engine thread on the scripted backend: order per session, interleaving, cancel, close, failures."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import (
    AppendAudioTurn,
    CancelGeneration,
    CloseSession,
    EngineOutput,
    GenerationDone,
    GenerationRequest,
    StartGeneration,
    TextDelta,
    TextPart,
    Turn,
)
from realtime.engine.worker import GIL_SWITCH_INTERVAL_S, EngineWorker

TIMEOUT_S = 10


def request(session_id: str, response_id: str, text: str) -> GenerationRequest:
    turn = Turn("user", (TextPart(text),), f"item-{response_id}")
    return GenerationRequest(session_id, response_id, f"out-{response_id}", "", (turn,))


class Log:
    """Every output in the order the engine thread delivered it; waits on GenerationDone, never sleeps."""

    def __init__(self) -> None:
        self.outputs: list[EngineOutput] = []
        self._done: queue.SimpleQueue[str] = queue.SimpleQueue()

    def __call__(self, output: EngineOutput) -> None:
        self.outputs.append(output)
        if isinstance(output, GenerationDone):
            self._done.put(output.response_id)

    def wait_done(self, n: int) -> None:
        for _ in range(n):
            self._done.get(timeout=TIMEOUT_S)

    def of(self, response_id: str) -> list[EngineOutput]:
        return [o for o in self.outputs if o.response_id == response_id]

    def text(self, response_id: str) -> str:
        return "".join(o.text for o in self.of(response_id) if isinstance(o, TextDelta))

    def done(self, response_id: str) -> GenerationDone:
        (done,) = [o for o in self.of(response_id) if isinstance(o, GenerationDone)]
        return done


def echo(request: GenerationRequest) -> str:
    return request.turns[-1].parts[0].text


@pytest.fixture
def worker_of():
    workers: list[EngineWorker] = []

    def start(backend) -> EngineWorker:
        worker = EngineWorker(backend)
        worker.start(timeout_s=TIMEOUT_S)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


class GatedBackend(FakeBackend):
    """Waits for `gate` before its first step, so a test can queue several commands that the thread
    then sees together, as it would under load."""

    def __init__(self, **kwargs) -> None:
        super().__init__(reply=echo, **kwargs)
        self.gate = threading.Event()

    def generate(self, request, should_stop) -> Iterator[EngineOutput]:
        if not self.gate.wait(TIMEOUT_S):
            raise TimeoutError("gate never opened")
        yield from super().generate(request, should_stop)


def test_the_engine_thread_lets_the_event_loop_take_the_gil_within_half_a_millisecond(worker_of):
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)  # Python's default
        worker_of(FakeBackend(reply=echo))
        assert sys.getswitchinterval() == GIL_SWITCH_INTERVAL_S == 0.0005
        # A process that asked for a shorter interval keeps it.
        sys.setswitchinterval(0.0001)
        shorter = sys.getswitchinterval()
        worker_of(FakeBackend(reply=echo))
        assert sys.getswitchinterval() == shorter
    finally:
        sys.setswitchinterval(before)


def test_a_session_s_requests_run_in_order_and_each_ends_once(worker_of):
    backend = GatedBackend()
    worker = worker_of(backend)
    log = Log()
    worker.send(StartGeneration(request("s", "r1", "one two three")), log)
    worker.send(StartGeneration(request("s", "r2", "four five")), log)
    backend.gate.set()
    log.wait_done(2)
    kinds = [(o.response_id, type(o).__name__) for o in log.outputs]
    assert kinds == [("r1", "TextDelta")] * 3 + [("r1", "GenerationDone")] + [("r2", "TextDelta")] * 2 + [
        ("r2", "GenerationDone")
    ]
    assert log.text("r1") == "one two three" and log.text("r2") == "four five"
    assert log.done("r1").stop_reason == log.done("r2").stop_reason == "end_of_turn"


def test_sessions_take_turns_one_step_at_a_time(worker_of):
    backend = GatedBackend()
    worker = worker_of(backend)
    log = Log()
    worker.send(StartGeneration(request("a", "ra", "a1 a2 a3 a4")), log)
    worker.send(StartGeneration(request("b", "rb", "b1 b2 b3 b4")), log)
    backend.gate.set()
    log.wait_done(2)
    deltas = [o.response_id for o in log.outputs if isinstance(o, TextDelta)]
    # Neither session waits for the other's answer to finish: every engine step gives each one word.
    assert [set(deltas[i : i + 2]) for i in range(0, 8, 2)] == [{"ra", "rb"}] * 4


def test_a_cancel_sent_after_a_delta_lands_before_the_next_one(worker_of):
    backend = FakeBackend(reply=echo)
    worker = worker_of(backend)
    log = Log()

    def cancel_on_first_delta(output: EngineOutput) -> None:
        log(output)
        if isinstance(output, TextDelta) and len(log.of("r")) == 1:
            worker.send(CancelGeneration("r"), log)

    worker.send(StartGeneration(request("s", "r", "w1 w2 w3 w4 w5 w6")), cancel_on_first_delta)
    log.wait_done(1)
    assert log.text("r") == "w1"
    assert log.done("r").stop_reason == "cancelled"


def test_closing_a_session_stops_its_work_and_frees_it_while_others_go_on(worker_of):
    backend = GatedBackend()
    worker = worker_of(backend)
    log = Log()
    # The engine thread may take this one alone and wait at the gate; the rest then queue up together.
    worker.send(StartGeneration(request("first", "r-first", "z")), log)
    worker.send(StartGeneration(request("gone", "r-gone", "x " * 50)), log)
    worker.send(StartGeneration(request("stays", "r-stays", "y1 y2 y3")), log)
    worker.send(CloseSession("gone"), log)
    backend.gate.set()
    log.wait_done(2)
    assert log.text("r-stays") == "y1 y2 y3"
    # The closed session's request was stopped, not stepped to its end, and its sink is never called.
    assert log.of("r-gone") == []
    assert backend.dropped_sessions == ["gone"]


class FailingBackend(FakeBackend):
    """Raises in the middle of the answers whose text starts with "fail"."""

    def generate(self, request, should_stop) -> Iterator[EngineOutput]:
        for i, output in enumerate(super().generate(request, should_stop)):
            if i == 1 and echo(request).startswith("fail"):
                raise RuntimeError("the device fell over")
            yield output


def test_a_backend_exception_fails_only_that_request(worker_of):
    backend = FailingBackend(reply=echo)
    worker = worker_of(backend)
    log = Log()
    worker.send(StartGeneration(request("a", "bad", "fail here now")), log)
    worker.send(StartGeneration(request("b", "good", "all is well")), log)
    worker.send(StartGeneration(request("a", "after", "still served")), log)
    log.wait_done(3)
    assert log.text("bad") == "fail"
    assert log.done("bad").stop_reason == "error"
    assert log.done("bad").error_message == "the device fell over"
    assert log.text("good") == "all is well" and log.done("good").stop_reason == "end_of_turn"
    # The failed session keeps being served.
    assert log.text("after") == "still served" and log.done("after").stop_reason == "end_of_turn"
    assert worker.health().alive


def test_success_never_goes_through_the_failure_path(worker_of, monkeypatch):
    failures: list[str] = []
    monkeypatch.setattr(EngineWorker, "_fail", lambda self, job, message: failures.append(message))
    worker = worker_of(FakeBackend(reply=echo))
    log = Log()
    worker.send(StartGeneration(request("s", "r1", "fine and dandy")), log)
    worker.send(StartGeneration(request("s", "r2", "cut")), log)
    worker.send(CancelGeneration("r2"), log)
    log.wait_done(2)
    assert log.done("r1").stop_reason == "end_of_turn"
    assert log.done("r2").stop_reason == "cancelled"
    assert failures == []


def test_a_dead_engine_answers_requests_at_once():
    worker = EngineWorker(FakeBackend())
    log = Log()
    # Never started: nothing would ever step a queued request.
    worker.send(StartGeneration(request("s", "r", "hello")), log)
    assert log.done("r").stop_reason == "error"


def test_audio_pushes_queued_behind_each_other_are_heard_in_one_go(worker_of):
    backend = GatedBackend()
    worker = worker_of(backend)
    log = Log()
    # The engine is busy answering while three 40 ms pushes arrive: they become one streamed step.
    worker.send(StartGeneration(request("s", "r", "busy")), log)
    for value in (1, 2, 3):
        worker.send(AppendAudioTurn("s", np.full(640, value, np.float32)), log)
    worker.send(StartGeneration(request("s", "r2", "done")), log)
    backend.gate.set()
    log.wait_done(2)
    assert backend.streamed == [("append", "s", 1920)]


class DyingBackend(GatedBackend):
    """Takes the engine thread down (an error no request handler may swallow) on the text "die"."""

    def generate(self, request, should_stop) -> Iterator[EngineOutput]:
        if echo(request) == "die":
            # Dies only once the test has queued everything else behind it.
            self.gate.wait(TIMEOUT_S)
            raise SystemExit("injected")
        yield from super().generate(request, should_stop)


def dying_worker() -> tuple[DyingBackend, EngineWorker, Log]:
    """A started worker whose first request, "first", takes the thread down once the gate opens."""
    backend = DyingBackend()
    worker = EngineWorker(backend)
    worker.start(timeout_s=TIMEOUT_S)
    log = Log()
    worker.send(StartGeneration(request("a", "first", "die")), log)
    return backend, worker, log


def test_when_the_thread_dies_every_waiting_request_still_gets_its_done():
    backend, worker, log = dying_worker()
    worker.send(StartGeneration(request("b", "queued", "never run")), log)
    worker.send(StartGeneration(request("a", "behind", "never run either")), log)
    backend.gate.set()
    log.wait_done(3)
    messages = [log.done(r).error_message for r in ("first", "queued", "behind")]
    assert messages == ["the engine thread died"] * 3
    assert not worker.health().alive
    worker.send(StartGeneration(request("c", "late", "hello")), log)
    assert log.done("late").error_message == "the engine is not running"
    worker.stop()


def test_a_request_sent_as_the_thread_dies_is_answered_once():
    backend, worker, log = dying_worker()
    make_job = worker._to_job
    checked = threading.Event()

    def slow_to_queue(command, sink):
        # The sender has found the engine alive and is about to queue: the engine dies right now.
        checked.set()
        backend.gate.set()
        job = make_job(command, sink)
        threading.Event().wait(0.3)
        return job

    worker._to_job = slow_to_queue
    sender = threading.Thread(target=worker.send, args=(StartGeneration(request("b", "racing", "hi")), log))
    sender.start()
    assert checked.wait(TIMEOUT_S)
    sender.join(TIMEOUT_S)
    log.wait_done(2)
    assert log.done("racing").error_message == "the engine thread died"
    worker.stop()
