"""Typed server events, one structure per wire `type`, with the fields the openai SDK requires."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

ItemStatus = Literal["completed", "incomplete", "in_progress"]
ResponseStatus = Literal["completed", "cancelled", "failed", "incomplete", "in_progress"]


class ContentPartOut(Struct, omit_defaults=True):
    type: str
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None
    image_url: str | None = None
    detail: str | None = None


class InputAudioPartOut(Struct):
    """`transcript` is sent as null rather than left out, as OpenAI does before transcription."""

    type: Literal["input_audio"] = "input_audio"
    transcript: str | None = None
    audio: str | None = None


class _ItemOut(Struct, tag_field="type", kw_only=True):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    status: ItemStatus = "completed"


class MessageItemOut(_ItemOut, tag="message"):
    role: str
    content: list[ContentPartOut | InputAudioPartOut]


class FunctionCallItemOut(_ItemOut, tag="function_call"):
    call_id: str
    name: str
    # JSON text of the arguments object ("" while the call is being written).
    arguments: str


class FunctionCallOutputItemOut(_ItemOut, tag="function_call_output"):
    call_id: str
    output: str


ItemOut = MessageItemOut | FunctionCallItemOut | FunctionCallOutputItemOut


class TokenDetails(Struct, kw_only=True):
    text_tokens: int
    audio_tokens: int
    image_tokens: int = 0
    cached_tokens: int = 0


class OutputTokenDetails(Struct, kw_only=True):
    text_tokens: int
    audio_tokens: int


class UsageOut(Struct, kw_only=True):
    total_tokens: int
    input_tokens: int
    output_tokens: int
    input_token_details: TokenDetails
    output_token_details: OutputTokenDetails


class StatusDetails(Struct, omit_defaults=True):
    type: str
    reason: str | None = None
    error: dict[str, str] | None = None


class ResponseOut(Struct, kw_only=True):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: ResponseStatus
    status_details: StatusDetails | None = None
    output: list[ItemOut]
    conversation_id: str | None
    output_modalities: list[str]
    max_output_tokens: int | Literal["inf"]
    metadata: dict[str, str] | None = None
    usage: UsageOut | None = None


class ErrorDetail(Struct, kw_only=True):
    type: str
    code: str | None
    message: str
    param: str | None
    event_id: str | None


class _ServerEvent(Struct, tag_field="type", kw_only=True):
    # Filled in by the session as it emits the event, so constructors stay short.
    event_id: str = ""


class SessionCreated(_ServerEvent, tag="session.created"):
    session: dict[str, Any]


class SessionUpdated(_ServerEvent, tag="session.updated"):
    session: dict[str, Any]


class ConversationItemAdded(_ServerEvent, tag="conversation.item.added"):
    previous_item_id: str | None
    item: ItemOut


class ConversationItemDone(_ServerEvent, tag="conversation.item.done"):
    previous_item_id: str | None
    item: ItemOut


class ConversationItemRetrieved(_ServerEvent, tag="conversation.item.retrieved"):
    item: ItemOut


class ConversationItemTruncated(_ServerEvent, tag="conversation.item.truncated"):
    item_id: str
    content_index: int
    audio_end_ms: int


class ConversationItemDeleted(_ServerEvent, tag="conversation.item.deleted"):
    item_id: str


class InputAudioBufferCommitted(_ServerEvent, tag="input_audio_buffer.committed"):
    previous_item_id: str | None
    item_id: str


class InputAudioBufferCleared(_ServerEvent, tag="input_audio_buffer.cleared"):
    pass


class InputAudioBufferSpeechStarted(_ServerEvent, tag="input_audio_buffer.speech_started"):
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(_ServerEvent, tag="input_audio_buffer.speech_stopped"):
    audio_end_ms: int
    item_id: str


class InputAudioBufferTimeoutTriggered(_ServerEvent, tag="input_audio_buffer.timeout_triggered"):
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


class ResponseCreated(_ServerEvent, tag="response.created"):
    response: ResponseOut


class ResponseDone(_ServerEvent, tag="response.done"):
    response: ResponseOut


class ResponseOutputItemAdded(_ServerEvent, tag="response.output_item.added"):
    response_id: str
    output_index: int
    item: ItemOut


class ResponseOutputItemDone(_ServerEvent, tag="response.output_item.done"):
    response_id: str
    output_index: int
    item: ItemOut


class ResponseContentPartAdded(_ServerEvent, tag="response.content_part.added"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: ContentPartOut


class ResponseContentPartDone(_ServerEvent, tag="response.content_part.done"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: ContentPartOut


class ResponseOutputTextDelta(_ServerEvent, tag="response.output_text.delta"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseOutputTextDone(_ServerEvent, tag="response.output_text.done"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    text: str


class ResponseFunctionCallArgumentsDelta(_ServerEvent, tag="response.function_call_arguments.delta"):
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class ResponseFunctionCallArgumentsDone(_ServerEvent, tag="response.function_call_arguments.done"):
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


class Error(_ServerEvent, tag="error"):
    error: ErrorDetail


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | ConversationItemAdded
    | ConversationItemDone
    | ConversationItemRetrieved
    | ConversationItemTruncated
    | ConversationItemDeleted
    | InputAudioBufferCommitted
    | InputAudioBufferCleared
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | InputAudioBufferTimeoutTriggered
    | ResponseCreated
    | ResponseDone
    | ResponseOutputItemAdded
    | ResponseOutputItemDone
    | ResponseContentPartAdded
    | ResponseContentPartDone
    | ResponseOutputTextDelta
    | ResponseOutputTextDone
    | ResponseFunctionCallArgumentsDelta
    | ResponseFunctionCallArgumentsDone
    | Error
)
