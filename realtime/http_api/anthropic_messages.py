"""POST /v1/messages (Anthropic) on the engine port: text, image and input_audio blocks, streaming events."""

from __future__ import annotations

import msgspec
from aiohttp import web

from ..engine.port import GenerationDone, GenerationRequest, Part, TextDelta, TextPart, Turn, Usage
from ..protocol.errors import ProtocolError
from ..vision.images import ImageLimits
from .anthropic_types import (
    AnswerText,
    AnthropicUsage,
    ContentBlock,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    ErrorDetail,
    ErrorEvent,
    ImageBlock,
    InputAudioBlock,
    MessageAnswer,
    MessageDelta,
    MessagesRequest,
    MessageStart,
    MessageStop,
    StopDelta,
    StreamEvent,
    TextBlock,
    TextDeltaBody,
)
from .engine_call import (
    Answer,
    ApiContext,
    checked_max_tokens,
    checked_sampling,
    complete,
    generate,
    generation_request,
    open_event_stream,
)
from .media import audio_format_of, decode_audio_part, decode_image_part
from .request_body import error_status, read_body
from .sse import sse_frame

STOP_REASONS = {"end_of_turn": "end_turn", "max_tokens": "max_tokens", "cancelled": "end_turn"}


class AnthropicMessages:
    def __init__(self, context: ApiContext) -> None:
        self._context = context

    async def handle(self, http: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(http, MessagesRequest)
            request = self._generation_request(body)
        except ProtocolError as exc:
            message = (
                exc.message
                if exc.param is None or exc.param in exc.message
                else f"{exc.param}: {exc.message}"
            )
            return anthropic_error(message, error_status(exc))
        if body.stream:
            return await self._stream(http, request)
        return await self._complete(request)

    def _generation_request(self, body: MessagesRequest) -> GenerationRequest:
        if body.tools:
            raise ProtocolError("unsupported_parameter", "tools: not supported here yet.", param="tools")
        session_id = self._context.ids.new("http")
        turns = []
        for index, message in enumerate(body.messages):
            item_id = f"{session_id}_m{index}"
            parts = _parts(message.content, item_id, f"messages.{index}.content", self._context.images)
            if message.role == "assistant":
                parts = [TextPart("".join(p.text for p in parts if isinstance(p, TextPart)))]
            turns.append(Turn(message.role, tuple(parts), item_id))
        system = body.system if isinstance(body.system, str) else "".join(b.text for b in body.system or [])
        return generation_request(
            self._context.ids,
            session_id,
            system,
            turns,
            checked_max_tokens(body.max_tokens, self._context.default_max_output_tokens, "max_tokens"),
            checked_sampling(body.temperature, body.top_p, max_temperature=1.0),
        )

    async def _complete(self, request: GenerationRequest) -> web.Response:
        # No tools are declared here (requests with tools are refused), so the answer is text alone.
        answer = await complete(self._context.engine, request)
        done = answer.done
        if done.stop_reason == "error":
            return anthropic_error(_failure_message(done), 500, "api_error")
        message = self._answer(request, [AnswerText(answer.text)], STOP_REASONS[done.stop_reason], done.usage)
        return web.Response(body=msgspec.json.encode(message), content_type="application/json")

    async def _stream(self, http: web.Request, request: GenerationRequest) -> web.StreamResponse:
        response = await open_event_stream(http)

        async def emit(event: StreamEvent | ErrorEvent) -> None:
            name = msgspec.inspect.type_info(type(event)).tag  # type: ignore[attr-defined]
            await response.write(sse_frame(msgspec.json.encode(event), event=name))

        async def send(output: Answer) -> None:
            if isinstance(output, TextDelta):
                await emit(ContentBlockDelta(TextDeltaBody(output.text)))

        await emit(MessageStart(self._answer(request, [], None, Usage())))
        await emit(ContentBlockStart(AnswerText("")))
        done = await generate(self._context.engine, request, send)
        if done.stop_reason == "error":
            await emit(ErrorEvent(ErrorDetail("api_error", _failure_message(done))))
        else:
            await emit(ContentBlockStop())
            stop = StopDelta(STOP_REASONS[done.stop_reason])
            await emit(MessageDelta(stop, anthropic_usage(done.usage)))
            await emit(MessageStop())
        await response.write_eof()
        return response

    def _answer(
        self, request: GenerationRequest, content: list[AnswerText], stop_reason: str | None, usage: Usage
    ) -> MessageAnswer:
        message_id = "msg_" + request.response_id.removeprefix("resp_")
        return MessageAnswer(message_id, self._context.model, content, stop_reason, anthropic_usage(usage))


def _parts(content: str | list[ContentBlock], item_id: str, param: str, images: ImageLimits) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for index, block in enumerate(content):
        where = f"{param}.{index}"
        if isinstance(block, TextBlock):
            parts.append(TextPart(block.text))
        elif isinstance(block, ImageBlock):
            uri = f"data:{block.source.media_type};base64,{block.source.data}"
            parts.append(decode_image_part(uri, images, f"{where}.source"))
        elif isinstance(block, InputAudioBlock):
            audio_format = audio_format_of(block.source.media_type, f"{where}.source.media_type")
            key = f"{item_id}/{index}"
            parts.append(decode_audio_part(block.source.data, audio_format, key, f"{where}.source"))
    return parts


def anthropic_usage(usage: Usage) -> AnthropicUsage:
    # Anthropic's input_tokens counts only what was not read from the cache.
    fresh = max(usage.input_tokens - usage.cached_tokens, 0)
    return AnthropicUsage(fresh, usage.output_tokens, cache_read_input_tokens=usage.cached_tokens)


def anthropic_error(message: str, status: int, error_type: str = "invalid_request_error") -> web.Response:
    body = msgspec.json.encode(ErrorEvent(ErrorDetail(error_type, message)))
    return web.Response(status=status, body=body, content_type="application/json")


def _failure_message(done: GenerationDone) -> str:
    return done.error_message or "the engine failed"
