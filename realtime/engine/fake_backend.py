"""A scripted backend for protocol tests: deterministic replies that describe what it was given."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .port import (
    ENGINE_SAMPLE_RATE_HZ,
    AudioPart,
    AudioTurnStart,
    EngineOutput,
    GenerationDone,
    GenerationRequest,
    ImagePart,
    TextDelta,
    TextPart,
    TranscriptionRequest,
    Usage,
)


def describe_request(request: GenerationRequest) -> str:
    """What the model was given, as text a test can check: the last user turn's parts."""
    user_turns = [t for t in request.turns if t.role == "user"]
    if not user_turns:
        return "nothing to answer"
    words = []
    for part in user_turns[-1].parts:
        if isinstance(part, TextPart):
            words.append(f"text:{part.text}")
        elif isinstance(part, AudioPart):
            words.append(f"audio:{len(part.samples) * 1000 // ENGINE_SAMPLE_RATE_HZ}ms")
        elif isinstance(part, ImagePart):
            words.append(f"image:{part.image.width}x{part.image.height}")
    return " ".join(words)


def describe_clips(request: TranscriptionRequest) -> str:
    n_samples = sum(len(clip.samples) for clip in request.clips)
    return f"speech of {n_samples * 1000 // ENGINE_SAMPLE_RATE_HZ} ms"


@dataclass
class FakeBackend:
    """Streams `reply(request)` word by word, one word per step, `seconds_per_token` apart."""

    reply: Callable[[GenerationRequest], str] = describe_request
    transcript: Callable[[TranscriptionRequest], str] = describe_clips
    name: str = "fake"
    seconds_per_token: float = 0.0
    requests: list[GenerationRequest] = field(default_factory=list)
    transcriptions: list[TranscriptionRequest] = field(default_factory=list)
    dropped_sessions: list[str] = field(default_factory=list)
    # ("begin" | "append" | "abandon", session id, audio key or n samples), in the order received.
    streamed: list[tuple[str, str, object]] = field(default_factory=list)

    def load(self) -> None:
        pass

    def generate(
        self, request: GenerationRequest, should_stop: Callable[[], bool]
    ) -> Iterator[EngineOutput]:
        self.requests.append(request)
        n_input = sum(len(t.parts) for t in request.turns)
        text = self.reply(request)
        yield from self._stream(request.response_id, text, request.max_output_tokens, n_input, should_stop)

    def transcribe(
        self, request: TranscriptionRequest, should_stop: Callable[[], bool]
    ) -> Iterator[EngineOutput]:
        self.transcriptions.append(request)
        text, n_clips = self.transcript(request), len(request.clips)
        yield from self._stream(request.request_id, text, request.max_output_tokens, n_clips, should_stop)

    def _stream(
        self, request_id: str, text: str, limit: int | None, n_input: int, should_stop: Callable[[], bool]
    ) -> Iterator[EngineOutput]:
        words = text.split(" ")
        limit = limit or len(words)
        n_output = 0
        for i, word in enumerate(words[:limit]):
            if should_stop():
                yield GenerationDone(request_id, "cancelled", Usage(n_input, 0, 0, 0, n_output))
                return
            # Simulated compute time on the engine thread, so cancels can land mid-answer.
            time.sleep(self.seconds_per_token)
            n_output += 1
            yield TextDelta(request_id, word if i == 0 else " " + word)
        reason = "max_tokens" if limit < len(words) else "end_of_turn"
        yield GenerationDone(request_id, reason, Usage(n_input, 0, 0, 0, n_output))

    def drop_session(self, session_id: str) -> None:
        self.dropped_sessions.append(session_id)

    def begin_audio_turn(self, start: AudioTurnStart) -> Iterator[None]:
        self.streamed.append(("begin", start.session_id, start.audio_key))
        yield None

    def append_audio_turn(self, session_id: str, samples: np.ndarray) -> Iterator[None]:
        self.streamed.append(("append", session_id, len(samples)))
        yield None

    def abandon_audio_turn(self, session_id: str) -> None:
        self.streamed.append(("abandon", session_id, None))
