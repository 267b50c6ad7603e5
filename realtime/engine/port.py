"""The engine port: the one interface through which sessions and HTTP handlers reach an engine.

Commands go in through `Engine.send`, outputs come back to the command's sink, each naming the request
(response id) it belongs to. The local MLX engine, the scripted fake and a remote serving engine all sit
behind it; the transport forwards commands without looking at their types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

ENGINE_SAMPLE_RATE_HZ = 16_000

# "tool": a function_call_output, the result of a call the assistant made.
Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["end_of_turn", "max_tokens", "cancelled", "error"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True, eq=False)
class AudioPart:
    """Mono float32 samples in [-1, 1] at ENGINE_SAMPLE_RATE_HZ."""

    samples: np.ndarray
    # Stable identity of this audio (item id + content index); the prompt cache compares keys, not samples.
    # Any length: the engine cuts what its model cannot hear at once into clips.
    key: str


@dataclass(frozen=True, eq=False)
class ImagePart:
    """An RGB image, already decoded and bounded."""

    image: Image.Image
    key: str


@dataclass(frozen=True)
class ToolCallPart:
    """A call the assistant made; `arguments` is JSON text (an object)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResultPart:
    call_id: str
    # The name of the function called, as the call stated it.
    name: str
    output: str


Part = TextPart | AudioPart | ImagePart | ToolCallPart | ToolResultPart


@dataclass(frozen=True)
class Turn:
    role: Role
    parts: tuple[Part, ...]
    # The conversation item id; an assistant turn the engine produced is replayed from its own tokens.
    item_id: str


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """A function the model may call; `parameters` is its JSON schema (an object schema)."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class NamedTool:
    """tool_choice naming one function: the answer is exactly one call of it."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedTool


@dataclass(frozen=True)
class GenerationRequest:
    session_id: str
    response_id: str
    # Item id the answer will be stored under, so the next turn can replay its exact tokens.
    output_item_id: str
    instructions: str
    turns: tuple[Turn, ...]
    max_output_tokens: int | None = None
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    # False for out-of-band responses (conversation "none"): the session's cache is left untouched.
    use_session_cache: bool = True
    tools: tuple[ToolSpec, ...] = ()
    # "required" and a NamedTool are enforced while decoding; "none" leaves the tools out of the prompt.
    tool_choice: ToolChoice = "auto"
    # False: at most one call per answer (the answer ends after it).
    parallel_tool_calls: bool = True

    @property
    def declared_tools(self) -> tuple[ToolSpec, ...]:
        """The tools the prompt declares: none when tool_choice is "none"."""
        return () if self.tool_choice == "none" else self.tools


@dataclass(frozen=True)
class Usage:
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens


@dataclass(frozen=True)
class TextDelta:
    response_id: str
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A complete call the model made; its tokens never appear as text. `arguments` is JSON text."""

    response_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class GenerationDone:
    response_id: str
    stop_reason: StopReason
    usage: Usage
    error_message: str | None = None


EngineOutput = TextDelta | ToolCall | GenerationDone


def context_overflow(response_id: str, usage: Usage, context_tokens: int) -> GenerationDone:
    """The end of a request whose prompt leaves no room for an answer in the model's context."""
    message = (
        f"The conversation is {usage.input_tokens} tokens and the model's context holds {context_tokens}: "
        "nothing was generated. Delete items, or set session.truncation to 'auto' or a retention_ratio."
    )
    return GenerationDone(response_id, "error", usage, message)


@dataclass(frozen=True)
class AudioTurnStart:
    """Speech has begun: the engine may prefill the conversation so far and this turn's opening, then
    its audio as it arrives, so that little is left to do when the user stops (streaming prefill)."""

    session_id: str
    instructions: str
    # The conversation before this turn, as the coming GenerationRequest will carry it.
    turns: tuple[Turn, ...]
    # The user item this turn becomes: `images`, then one AudioPart keyed `audio_key`.
    item_id: str
    images: tuple[ImagePart, ...]
    audio_key: str
    # The tools the coming request declares (none when tool_choice is "none").
    tools: tuple[ToolSpec, ...] = ()


@dataclass(frozen=True)
class StartGeneration:
    request: GenerationRequest


@dataclass(frozen=True)
class CancelGeneration:
    response_id: str


@dataclass(frozen=True)
class BeginAudioTurn:
    start: AudioTurnStart


@dataclass(frozen=True, eq=False)
class AppendAudioTurn:
    """More of the streamed turn's audio: 16 kHz float32, following what came before."""

    session_id: str
    samples: np.ndarray


@dataclass(frozen=True)
class AbandonAudioTurn:
    """The streamed turn will not be committed: the engine forgets everything it did for it."""

    session_id: str


@dataclass(frozen=True)
class CloseSession:
    """The connection is gone: stop its work and free what the engine holds for it."""

    session_id: str


EngineCommand = (
    StartGeneration | CancelGeneration | BeginAudioTurn | AppendAudioTurn | AbandonAudioTurn | CloseSession
)
OutputSink = Callable[[EngineOutput], None]


@dataclass(frozen=True)
class EngineHealth:
    loaded: bool
    # False once the engine can no longer serve (its thread died, its upstream is gone).
    alive: bool
    model: str = ""
    detail: str | None = None
    # Load, for /metrics: work items queued or running, and sequences advanced per step right now.
    queue_depth: int = 0
    batch_size: int = 0
    # Tokens one request may hold, prompt and answer together; None: unknown (sessions then never truncate).
    context_tokens: int | None = None


class Engine(Protocol):
    """What the rest of the server needs from an engine. `send` never blocks and is safe from any thread;
    sinks may be called on any thread (the transport hops back to its event loop)."""

    def start(self, timeout_s: float | None = None) -> None:
        """Block until the engine can serve: model loaded and warm, or upstream reachable."""

    def send(self, command: EngineCommand, sink: OutputSink) -> None:
        """Queue one command. Outputs of a StartGeneration go to `sink`: zero or more TextDelta and ToolCall,
        then exactly one GenerationDone (also on cancellation and on failure)."""

    def health(self) -> EngineHealth: ...

    def stop(self) -> None:
        """Stop all work and release the engine; no sink is called afterwards."""
