"""One HTTP API generation through the engine port: its own engine session, opened and closed per request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from ..engine.port import (
    CancelGeneration,
    CloseSession,
    Engine,
    EngineOutput,
    GenerationDone,
    GenerationRequest,
    SamplingSettings,
    StartGeneration,
    TextDelta,
    ToolCall,
    Turn,
)
from ..protocol.errors import ProtocolError
from ..protocol.ids import IdFactory
from ..session.settings import MAX_OUTPUT_TOKENS_LIMIT
from ..vision.images import ImageLimits


@dataclass(frozen=True)
class ApiContext:
    """What every HTTP API handler serves with."""

    engine: Engine
    model: str
    ids: IdFactory
    default_max_output_tokens: int = 1024
    images: ImageLimits = ImageLimits()


def generation_request(
    ids: IdFactory,
    session_id: str,
    instructions: str,
    turns: Sequence[Turn],
    max_output_tokens: int,
    sampling: SamplingSettings,
) -> GenerationRequest:
    if not any(turn.role == "user" for turn in turns):
        # A conversation without a user turn has nothing to answer.
        raise ProtocolError(
            "invalid_value", "The conversation needs at least one user message.", param="messages"
        )
    return GenerationRequest(
        session_id=session_id,
        response_id=ids.response(),
        output_item_id=ids.item(),
        instructions=instructions,
        turns=tuple(turns),
        max_output_tokens=max_output_tokens,
        sampling=sampling,
        # Each HTTP request is a conversation of its own, closed when it ends.
        use_session_cache=True,
    )


def checked_max_tokens(value: int | None, default: int, param: str) -> int:
    if value is None:
        return default
    if not 1 <= value <= MAX_OUTPUT_TOKENS_LIMIT:
        message = f"`{param}` must be between 1 and {MAX_OUTPUT_TOKENS_LIMIT}, got {value}."
        raise ProtocolError("invalid_value", message, param=param)
    return value


def checked_sampling(
    temperature: float | None, top_p: float | None, max_temperature: float
) -> SamplingSettings:
    if temperature is not None and not 0 <= temperature <= max_temperature:
        message = f"`temperature` must be between 0 and {max_temperature:g}."
        raise ProtocolError("invalid_value", message, param="temperature")
    if top_p is not None and not 0 < top_p <= 1:
        raise ProtocolError("invalid_value", "`top_p` must be in (0, 1].", param="top_p")
    return SamplingSettings(
        temperature=1.0 if temperature is None else temperature, top_p=1.0 if top_p is None else top_p
    )


Answer = TextDelta | ToolCall


async def generate(
    engine: Engine, request: GenerationRequest, on_output: Callable[[Answer], Awaitable[None]]
) -> GenerationDone:
    """Run the request, awaiting `on_output` for each delta and call; if the caller goes away (its task
    is cancelled, or `on_output` raises), the generation is cancelled. The engine session is closed after."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[EngineOutput] = asyncio.Queue()

    def sink(output: EngineOutput) -> None:
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, output)
        except RuntimeError:
            pass  # the event loop has closed: nobody is left to read this output

    engine.send(StartGeneration(request), sink)
    finished = False
    try:
        while True:
            output = await inbox.get()
            if isinstance(output, GenerationDone):
                finished = True
                return output
            await on_output(output)
    finally:
        if not finished:
            engine.send(CancelGeneration(request.response_id), sink)
        engine.send(CloseSession(request.session_id), sink)


@dataclass
class CompleteAnswer:
    text: str
    calls: list[ToolCall]
    done: GenerationDone


async def complete(engine: Engine, request: GenerationRequest) -> CompleteAnswer:
    """The whole answer at once, for a request that does not stream."""
    pieces: list[str] = []
    calls: list[ToolCall] = []

    async def keep(output: Answer) -> None:
        if isinstance(output, TextDelta):
            pieces.append(output.text)
        else:
            calls.append(output)

    done = await generate(engine, request, keep)
    return CompleteAnswer("".join(pieces), calls, done)


async def open_event_stream(http: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(http)
    return response
