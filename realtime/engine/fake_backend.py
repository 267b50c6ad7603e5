"""A scripted backend for protocol tests: deterministic replies that describe what it was given."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

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
    ToolCall,
    Usage,
    context_overflow,
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


def count_parts(request: GenerationRequest) -> Usage:
    """Input usage as one text token per part."""
    return Usage(input_text_tokens=sum(len(t.parts) for t in request.turns))


def no_calls(request: GenerationRequest) -> list[tuple[str, str]]:
    return []


@dataclass
class FakeBackend:
    """Streams `reply(request)` word by word, one word per step, `seconds_per_token` apart, then the
    scripted tool calls `calls(request)` ((name, arguments JSON) pairs), one per step."""

    reply: Callable[[GenerationRequest], str] = describe_request
    calls: Callable[[GenerationRequest], list[tuple[str, str]]] = no_calls
    name: str = "fake"
    context_tokens: int | None = None
    seconds_per_token: float = 0.0
    # The input usage it reports; a request it cannot hold within context_tokens fails as the MLX one does.
    count_input: Callable[[GenerationRequest], Usage] = count_parts
    requests: list[GenerationRequest] = field(default_factory=list)
    dropped_sessions: list[str] = field(default_factory=list)
    # ("begin" | "append" | "abandon", session id, audio key or n samples), in the order received.
    streamed: list[tuple[str, str, object]] = field(default_factory=list)

    def load(self) -> None:
        pass

    def generate(self, request: GenerationRequest, should_stop: Callable[[], bool]) -> Iterator[EngineOutput]:
        self.requests.append(request)
        text = self.reply(request)
        steps: list[EngineOutput] = [
            TextDelta(request.response_id, word if i == 0 else " " + word)
            for i, word in enumerate(text.split(" ") if text else [])
        ]
        steps += [
            ToolCall(request.response_id, f"call_{request.response_id}_{n}", name, arguments)
            for n, (name, arguments) in enumerate(self.calls(request))
        ]
        limit = request.max_output_tokens or len(steps)
        usage = self.count_input(request)
        if self.context_tokens is not None and usage.input_tokens >= self.context_tokens:
            yield context_overflow(request.response_id, usage, self.context_tokens)
            return
        n_output = 0
        for step in steps[:limit]:
            if should_stop():
                yield GenerationDone(request.response_id, "cancelled", replace(usage, output_tokens=n_output))
                return
            # Simulated compute time on the engine thread, so cancels can land mid-answer.
            time.sleep(self.seconds_per_token)
            n_output += 1
            yield step
        reason = "max_tokens" if limit < len(steps) else "end_of_turn"
        yield GenerationDone(request.response_id, reason, replace(usage, output_tokens=n_output))

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
