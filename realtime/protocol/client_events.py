"""Typed client events, one structure per wire `type` (GA names, plus our frame extension)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal, TypeVar

import msgspec
from msgspec import NODEFAULT, UNSET, Struct, UnsetType

T = TypeVar("T")

# Absent and null differ for a few fields (`turn_detection: null` turns VAD off), so patches use UNSET.
# Everywhere else OpenAI reads an explicit null as "not given" (LiveKit sends `instructions: null`):
# a `Maybe` field decodes null, and `_Wire.__post_init__` turns it back into the field's default.
Maybe = T | None | UnsetType


class _Wire(Struct):
    # Optional fields where null has a meaning of its own; every other optional null reads as absent.
    null_is_a_value: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        for name, default in _defaults_for_null(type(self)):
            if getattr(self, name) is None:
                setattr(self, name, default)


@functools.cache
def _defaults_for_null(cls: type[_Wire]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (field.name, field.default)
        for field in msgspec.structs.fields(cls)
        if field.default is not NODEFAULT
        and field.default is not None
        and field.name not in cls.null_is_a_value
    )


class ContentPart(_Wire, omit_defaults=True):
    type: str
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None
    image_url: str | None = None
    detail: str | None = None


class Item(_Wire, omit_defaults=True):
    type: str | None = "message"
    id: str | None = None
    role: str | None = None
    content: list[ContentPart] | None = None
    status: str | None = None
    object: str | None = None
    # function_call / function_call_output fields, validated by the conversation.
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class AudioFormatSpec(_Wire):
    type: str | None = "audio/pcm"
    rate: Maybe[int] = UNSET


class TurnDetectionSpec(_Wire):
    null_is_a_value = frozenset({"idle_timeout_ms"})

    type: str
    threshold: Maybe[float] = UNSET
    prefix_padding_ms: Maybe[int] = UNSET
    silence_duration_ms: Maybe[int] = UNSET
    idle_timeout_ms: int | None | UnsetType = UNSET
    create_response: Maybe[bool] = UNSET
    interrupt_response: Maybe[bool] = UNSET
    eagerness: Maybe[str] = UNSET


class TranscriptionSpec(_Wire):
    # Any model name is accepted: the loaded model transcribes.
    model: Maybe[str] = UNSET
    language: Maybe[str] = UNSET
    prompt: Maybe[str] = UNSET


class AudioInputSpec(_Wire):
    null_is_a_value = frozenset({"turn_detection", "transcription", "noise_reduction"})

    format: Maybe[AudioFormatSpec] = UNSET
    turn_detection: TurnDetectionSpec | None | UnsetType = UNSET
    transcription: TranscriptionSpec | None | UnsetType = UNSET
    noise_reduction: dict[str, Any] | None | UnsetType = UNSET


class AudioOutputSpec(_Wire):
    format: Maybe[AudioFormatSpec] = UNSET
    voice: Maybe[str | dict[str, Any]] = UNSET
    speed: Maybe[float] = UNSET


class AudioSpec(_Wire):
    input: Maybe[AudioInputSpec] = UNSET
    output: Maybe[AudioOutputSpec] = UNSET


class FramesSpec(_Wire):
    """Extension: how live camera frames join audio turns."""

    max_per_turn: Maybe[int] = UNSET
    min_interval_ms: Maybe[int] = UNSET


class SessionPatch(_Wire):
    null_is_a_value = frozenset({"include", "turn_detection", "input_audio_transcription"})

    type: Maybe[str] = UNSET
    model: Maybe[str] = UNSET
    instructions: Maybe[str] = UNSET
    output_modalities: Maybe[list[str]] = UNSET
    max_output_tokens: Maybe[int | Literal["inf"]] = UNSET
    audio: Maybe[AudioSpec] = UNSET
    frames: Maybe[FramesSpec] = UNSET
    temperature: Maybe[float] = UNSET
    # "auto", "disabled" or {"type": "retention_ratio", ...}: checked by session.truncation.
    truncation: Maybe[Any] = UNSET
    # Checked by the session (session/tools.py), which names the field at fault.
    tools: Maybe[Any] = UNSET
    tool_choice: Maybe[Any] = UNSET
    parallel_tool_calls: Maybe[bool] = UNSET
    # Accepted so clients that always send them are not refused; they have no effect here.
    tracing: Maybe[Any] = UNSET
    include: list[str] | None | UnsetType = UNSET
    # Beta aliases of GA fields.
    modalities: Maybe[list[str]] = UNSET
    input_audio_format: Maybe[str] = UNSET
    turn_detection: TurnDetectionSpec | None | UnsetType = UNSET
    # Null turns transcription off, as in audio.input.transcription.
    input_audio_transcription: TranscriptionSpec | None | UnsetType = UNSET
    voice: Maybe[str] = UNSET


class ResponseSpec(_Wire):
    conversation: Maybe[str] = UNSET
    input: Maybe[list[Item]] = UNSET
    instructions: Maybe[str] = UNSET
    max_output_tokens: Maybe[int | Literal["inf"]] = UNSET
    metadata: Maybe[dict[str, str]] = UNSET
    output_modalities: Maybe[list[str]] = UNSET
    modalities: Maybe[list[str]] = UNSET
    temperature: Maybe[float] = UNSET
    tools: Maybe[Any] = UNSET
    tool_choice: Maybe[Any] = UNSET
    parallel_tool_calls: Maybe[bool] = UNSET
    audio: Maybe[Any] = UNSET


class _Event(_Wire, tag_field="type", kw_only=True):
    event_id: str | None = None


class SessionUpdate(_Event, tag="session.update"):
    session: SessionPatch


class InputAudioBufferAppend(_Event, tag="input_audio_buffer.append"):
    # Decoded from base64 by msgspec straight out of the message: no str copy of a chunk is ever made.
    audio: bytes


class InputAudioBufferCommit(_Event, tag="input_audio_buffer.commit"):
    pass


class InputAudioBufferClear(_Event, tag="input_audio_buffer.clear"):
    pass


class InputImageBufferAppend(_Event, tag="input_image_buffer.append"):
    """Extension: one live camera frame, as a data URI or bare base64."""

    image: str


class ConversationItemCreate(_Event, tag="conversation.item.create"):
    item: Item
    previous_item_id: str | None = None


class ConversationItemRetrieve(_Event, tag="conversation.item.retrieve"):
    item_id: str


class ConversationItemTruncate(_Event, tag="conversation.item.truncate"):
    item_id: str
    content_index: int
    audio_end_ms: int


class ConversationItemDelete(_Event, tag="conversation.item.delete"):
    item_id: str


class ResponseCreate(_Event, tag="response.create"):
    response: ResponseSpec | None = None


class ResponseCancel(_Event, tag="response.cancel"):
    response_id: str | None = None


class OutputAudioBufferClear(_Event, tag="output_audio_buffer.clear"):
    pass


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | InputImageBufferAppend
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
    | OutputAudioBufferClear
)

EVENT_TYPES: dict[str, type[_Event]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in ClientEvent.__args__  # type: ignore[attr-defined]
}
