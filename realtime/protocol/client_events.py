"""Typed client events, one structure per wire `type` (GA names, plus our frame extension)."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

# Absent and null differ on the wire (`turn_detection: null` turns VAD off), so patches use UNSET.


class ContentPart(Struct, omit_defaults=True):
    type: str
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None
    image_url: str | None = None
    detail: str | None = None


class Item(Struct, omit_defaults=True):
    type: str = "message"
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


class AudioFormatSpec(Struct):
    type: str = "audio/pcm"
    rate: int | UnsetType = UNSET


class TurnDetectionSpec(Struct):
    type: str
    threshold: float | UnsetType = UNSET
    prefix_padding_ms: int | UnsetType = UNSET
    silence_duration_ms: int | UnsetType = UNSET
    idle_timeout_ms: int | None | UnsetType = UNSET
    create_response: bool | UnsetType = UNSET
    interrupt_response: bool | UnsetType = UNSET
    eagerness: str | UnsetType = UNSET


class TranscriptionSpec(Struct):
    # Any model name is accepted: the loaded model transcribes.
    model: str | None | UnsetType = UNSET
    language: str | None | UnsetType = UNSET
    prompt: str | None | UnsetType = UNSET


class AudioInputSpec(Struct):
    format: AudioFormatSpec | UnsetType = UNSET
    turn_detection: TurnDetectionSpec | None | UnsetType = UNSET
    transcription: TranscriptionSpec | None | UnsetType = UNSET
    noise_reduction: dict[str, Any] | None | UnsetType = UNSET


class AudioOutputSpec(Struct):
    format: AudioFormatSpec | UnsetType = UNSET
    voice: str | dict[str, Any] | UnsetType = UNSET
    speed: float | UnsetType = UNSET


class AudioSpec(Struct):
    input: AudioInputSpec | UnsetType = UNSET
    output: AudioOutputSpec | UnsetType = UNSET


class FramesSpec(Struct):
    """Extension: how live camera frames join audio turns."""

    max_per_turn: int | UnsetType = UNSET
    min_interval_ms: int | UnsetType = UNSET


class SessionPatch(Struct):
    type: str | UnsetType = UNSET
    model: str | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    output_modalities: list[str] | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    audio: AudioSpec | UnsetType = UNSET
    frames: FramesSpec | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    # "auto", "disabled" or {"type": "retention_ratio", ...}: checked by session.truncation.
    truncation: Any | UnsetType = UNSET
    # Checked by the session (session/tools.py), which names the field at fault.
    tools: Any | UnsetType = UNSET
    tool_choice: Any | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    # Accepted so clients that always send them are not refused; they have no effect here.
    tracing: Any | UnsetType = UNSET
    include: list[str] | None | UnsetType = UNSET
    # Beta aliases of GA fields.
    modalities: list[str] | UnsetType = UNSET
    input_audio_format: str | UnsetType = UNSET
    turn_detection: TurnDetectionSpec | None | UnsetType = UNSET
    input_audio_transcription: TranscriptionSpec | None | UnsetType = UNSET
    voice: str | UnsetType = UNSET


class ResponseSpec(Struct):
    conversation: str | UnsetType = UNSET
    input: list[Item] | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    output_modalities: list[str] | UnsetType = UNSET
    modalities: list[str] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    tools: Any | UnsetType = UNSET
    tool_choice: Any | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    audio: Any | UnsetType = UNSET


class _Event(Struct, tag_field="type", kw_only=True):
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
