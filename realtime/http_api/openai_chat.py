"""POST /v1/chat/completions (OpenAI) on the engine port: text, input_audio (wav/mp3), image_url data URIs."""

from __future__ import annotations

import time
from dataclasses import replace

import msgspec
from aiohttp import web

from ..engine.port import GenerationDone, GenerationRequest, Part, TextDelta, TextPart, Turn, Usage
from ..protocol.errors import ProtocolError
from ..vision.images import ImageLimits
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
from .openai_tools import call_delta, call_parts, call_spec, request_tools, result_part
from .openai_types import (
    AnswerChoice,
    AnswerMessage,
    AssistantMessage,
    ChatChunk,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    ChatUsage,
    ChunkChoice,
    ChunkDelta,
    ErrorBody,
    ErrorDetail,
    ImageUrlContent,
    InputAudioContent,
    PromptTokensDetails,
    TextContent,
    ToolMessage,
    UserContent,
    UserMessage,
)
from .request_body import error_status, read_body
from .sse import sse_frame

FINISH_REASONS = {"end_of_turn": "stop", "max_tokens": "length", "cancelled": "stop"}


class OpenAIChat:
    def __init__(self, context: ApiContext) -> None:
        self._context = context

    async def handle(self, http: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(http, ChatRequest)
            request = self._generation_request(body)
        except ProtocolError as exc:
            return openai_error(exc, error_status(exc))
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return await self._stream(http, request, include_usage)
        return await self._complete(request)

    def _generation_request(self, body: ChatRequest) -> GenerationRequest:
        if body.n not in (None, 1):
            raise ProtocolError("invalid_value", "Only n=1 is supported.", param="n")
        session_id = self._context.ids.new("http")
        instructions, turns = _conversation(body.messages, session_id, self._context.images)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        tools, tool_choice = request_tools(body)
        request = generation_request(
            self._context.ids,
            session_id,
            instructions,
            turns,
            checked_max_tokens(max_tokens, self._context.default_max_output_tokens, param),
            checked_sampling(body.temperature, body.top_p, max_temperature=2.0),
        )
        parallel = body.parallel_tool_calls is not False
        return replace(request, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel)

    async def _complete(self, request: GenerationRequest) -> web.Response:
        result = await complete(self._context.engine, request)
        done = result.done
        if done.stop_reason == "error":
            return _engine_failure(done)
        calls = [call_spec(call) for call in result.calls] or None
        message = AnswerMessage(result.text if result.text or not calls else None, tool_calls=calls)
        finish = "tool_calls" if calls else FINISH_REASONS[done.stop_reason]
        answer = ChatCompletion(
            id=_completion_id(request),
            model=self._context.model,
            created=int(time.time()),
            choices=[AnswerChoice(message, finish)],
            usage=chat_usage(done.usage),
        )
        return web.Response(body=msgspec.json.encode(answer), content_type="application/json")

    async def _stream(self, http: web.Request, request: GenerationRequest, include_usage: bool):
        response = await open_event_stream(http)
        created = int(time.time())

        def frame(delta: ChunkDelta, finish: str | None = None, usage: Usage | None = None) -> bytes:
            choices = [] if usage else [ChunkChoice(delta=delta, finish_reason=finish)]
            chunk = ChatChunk(
                choices,
                _completion_id(request),
                self._context.model,
                created,
                usage=usage and chat_usage(usage),
            )
            return sse_frame(msgspec.json.encode(chunk))

        n_calls = 0

        async def send(output: Answer) -> None:
            nonlocal n_calls
            if isinstance(output, TextDelta):
                await response.write(frame(ChunkDelta(content=output.text)))
            else:
                await response.write(frame(ChunkDelta(tool_calls=[call_delta(output, n_calls)])))
                n_calls += 1

        await response.write(frame(ChunkDelta(role="assistant", content="")))
        done = await generate(self._context.engine, request, send)
        if done.stop_reason == "error":
            await response.write(sse_frame(msgspec.json.encode(_failure_body(done))))
        else:
            finish = "tool_calls" if n_calls else FINISH_REASONS[done.stop_reason]
            await response.write(frame(ChunkDelta(), finish))
            if include_usage:
                await response.write(frame(ChunkDelta(), usage=done.usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _conversation(
    messages: list[ChatMessage], session_id: str, images: ImageLimits
) -> tuple[str, list[Turn]]:
    instructions: list[str] = []
    turns: list[Turn] = []
    names_by_call_id: dict[str, str] = {}
    for index, message in enumerate(messages):
        item_id = f"{session_id}_m{index}"
        if isinstance(message, UserMessage):
            parts = _user_parts(message.content, item_id, f"messages[{index}].content", images)
            turns.append(Turn("user", tuple(parts), item_id))
        elif isinstance(message, AssistantMessage):
            calls = call_parts(message.tool_calls)
            names_by_call_id.update((call.call_id, call.name) for call in calls)
            text = [TextPart(_text_of(message.content))] if message.content or not calls else []
            turns.append(Turn("assistant", (*text, *calls), item_id))
        elif isinstance(message, ToolMessage):
            result = result_part(message, names_by_call_id, f"messages[{index}]")
            turns.append(Turn("tool", (result,), item_id))
        else:
            instructions.append(_text_of(message.content))
    return "\n\n".join(instructions), turns


def _user_parts(
    content: str | list[UserContent], item_id: str, param: str, images: ImageLimits
) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if isinstance(part, TextContent):
            parts.append(TextPart(part.text))
        elif isinstance(part, ImageUrlContent):
            if part.image_url is None:
                raise ProtocolError("missing_required_parameter", "`image_url` is required.", param=where)
            parts.append(decode_image_part(part.image_url.url, images, f"{where}.image_url.url"))
        elif isinstance(part, InputAudioContent):
            if part.input_audio is None:
                raise ProtocolError("missing_required_parameter", "`input_audio` is required.", param=where)
            audio_format = audio_format_of(part.input_audio.format, f"{where}.input_audio.format")
            key = f"{item_id}/{index}"
            parts.append(decode_audio_part(part.input_audio.data, audio_format, key, where))
    return parts


def _text_of(content: str | list[TextContent] | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(part.text for part in content)


def chat_usage(usage: Usage) -> ChatUsage:
    details = PromptTokensDetails(cached_tokens=usage.cached_tokens, audio_tokens=usage.input_audio_tokens)
    total = usage.input_tokens + usage.output_tokens
    return ChatUsage(usage.input_tokens, usage.output_tokens, total, details)


def _completion_id(request: GenerationRequest) -> str:
    return "chatcmpl-" + request.response_id.removeprefix("resp_")


def openai_error(exc: ProtocolError, status: int) -> web.Response:
    body = ErrorBody(ErrorDetail(exc.message, exc.error_type, exc.param, exc.code))
    return web.Response(status=status, body=msgspec.json.encode(body), content_type="application/json")


def _failure_body(done: GenerationDone) -> ErrorBody:
    message = done.error_message or "the engine failed"
    return ErrorBody(ErrorDetail(message, "server_error", None, "engine_error"))


def _engine_failure(done: GenerationDone) -> web.Response:
    body = msgspec.json.encode(_failure_body(done))
    return web.Response(status=500, body=body, content_type="application/json")
