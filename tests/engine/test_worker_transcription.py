"""Transcriptions on the local engine thread: a lane of their own beside the session's answer."""

from __future__ import annotations

import queue

import numpy as np

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import (
    AudioPart,
    GenerationDone,
    GenerationRequest,
    StartGeneration,
    StartTranscription,
    TextPart,
    TranscriptionRequest,
    Turn,
)
from realtime.engine.worker import EngineWorker

TIMEOUT_S = 30


def commands(session_id: str = "s") -> tuple[StartGeneration, StartTranscription]:
    clip = AudioPart(np.zeros(16_000, np.float32), "item/0/0")
    turn = Turn("user", (TextPart("hi"), clip), "item")
    answer = GenerationRequest(session_id, "resp", "out", "", (turn,))
    transcription = TranscriptionRequest(session_id, "tr", (clip,))
    return StartGeneration(answer), StartTranscription(transcription)


def outputs_of(first, second) -> list[tuple[str, str]]:
    """(request id, output type) in the order the engine thread delivered them, until both are done."""
    backend = FakeBackend(reply=lambda r: "one two three four", transcript=lambda r: "a b c d")
    worker = EngineWorker(backend)
    worker.start(timeout_s=TIMEOUT_S)
    delivered: queue.Queue = queue.Queue()
    try:
        worker.send(first, delivered.put)
        worker.send(second, delivered.put)
        seen: list[tuple[str, str]] = []
        while sum(kind == "GenerationDone" for _, kind in seen) < 2:
            output = delivered.get(timeout=TIMEOUT_S)
            seen.append((output.response_id, type(output).__name__))
        return seen
    finally:
        worker.stop()


def test_transcription_takes_turns_with_the_answer_instead_of_waiting_behind_it():
    answer, transcription = commands()
    seen = outputs_of(answer, transcription)
    assert seen[0] == ("resp", "TextDelta")
    # Interleaved step by step (every lane advances once per engine step, the first one rotating): the
    # transcript streams while the answer is still being written.
    steps = [{request for request, _ in seen[i : i + 2]} for i in range(0, 8, 2)]
    assert steps == [{"resp", "tr"}] * 4


def test_transcription_sent_first_delays_the_answer_by_one_step_at_most():
    answer, transcription = commands()
    seen = outputs_of(transcription, answer)
    assert seen.index(("resp", "TextDelta")) <= 1


def test_dead_engine_fails_a_transcription_at_once():
    worker = EngineWorker(FakeBackend())
    _, transcription = commands()
    delivered: list = []
    worker.send(transcription, delivered.append)
    assert isinstance(delivered[0], GenerationDone) and delivered[0].response_id == "tr"
    assert delivered[0].stop_reason == "error"
