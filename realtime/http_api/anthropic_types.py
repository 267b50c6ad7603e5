"""Anthropic Messages wire types: requests (with the seed's input_audio block), answers, stream events."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct


class Base64Source(Struct, tag_field="type", tag="base64"):
    media_type: str
    data: str


class TextBlock(Struct, tag_field="type", tag="text"):
    text: str


class ImageBlock(Struct, tag_field="type", tag="image"):
    source: Base64Source


class InputAudioBlock(Struct, tag_field="type", tag="input_audio"):
    source: Base64Source


ContentBlock = TextBlock | ImageBlock | InputAudioBlock


class Message(Struct):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class MessagesRequest(Struct):
    model: str
    max_tokens: int
    messages: list[Message]
    system: str | list[TextBlock] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    # Declared so that a request with tools is refused rather than answered without them.
    tools: list[dict] | None = None


class AnthropicUsage(Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class AnswerText(Struct, tag_field="type", tag="text"):
    text: str


class MessageAnswer(Struct, tag_field="type", tag="message"):
    id: str
    model: str
    content: list[AnswerText]
    stop_reason: str | None
    usage: AnthropicUsage
    role: str = "assistant"
    stop_sequence: str | None = None


class MessageStart(Struct, tag_field="type", tag="message_start"):
    message: MessageAnswer


class ContentBlockStart(Struct, tag_field="type", tag="content_block_start"):
    content_block: AnswerText
    index: int = 0


class TextDeltaBody(Struct, tag_field="type", tag="text_delta"):
    text: str


class ContentBlockDelta(Struct, tag_field="type", tag="content_block_delta"):
    delta: TextDeltaBody
    index: int = 0


class ContentBlockStop(Struct, tag_field="type", tag="content_block_stop"):
    index: int = 0


class StopDelta(Struct):
    stop_reason: str
    stop_sequence: str | None = None


class MessageDelta(Struct, tag_field="type", tag="message_delta"):
    delta: StopDelta
    # The whole usage: input tokens are only known once the prompt has run.
    usage: AnthropicUsage


class MessageStop(Struct, tag_field="type", tag="message_stop"):
    pass


class ErrorDetail(Struct):
    type: str
    message: str


class ErrorEvent(Struct, tag_field="type", tag="error"):
    error: ErrorDetail


StreamEvent = (
    MessageStart | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta | MessageStop
)
