"""RemoteEngine: the engine port over an OpenAI-compatible serving engine, one streamed request per answer."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

import aiohttp
import msgspec

from ...http_api.openai_types import ChatChunk, ChatUsage, ErrorBody, ModelList, ToolCallDelta
from ...http_api.sse import SseDecoder
from ..gemma4.transcription import transcription_generation
from ..port import (
    CancelGeneration,
    CloseSession,
    EngineCommand,
    EngineHealth,
    EngineOutput,
    GenerationDone,
    GenerationRequest,
    OutputSink,
    StartGeneration,
    StartTranscription,
    StopReason,
    TextDelta,
    ToolCall,
    Usage,
)
from .chat_request import ChatRequestPlan, UnsupportedContent, build_chat_request

log = logging.getLogger(__name__)

# Finish reasons a chat-completions engine may report; anything else (tool_calls too) ends the turn.
_STOP_REASONS: dict[str, StopReason] = {"stop": "end_of_turn", "length": "max_tokens"}
# Statuses with which an engine that lost a media id rejects a request that names it without data.
_MEDIA_MISS_STATUSES = {400, 404, 422}


@dataclass(frozen=True)
class RemoteEngineConfig:
    # The engine's OpenAI base URL, ending in /v1.
    base_url: str
    # None: the first model the engine lists.
    model: str | None = None
    api_key: str | None = None
    # Send a content-derived `uuid` per media part, and media the engine already has as the id alone
    # (vLLM); engines without it get the data every time.
    media_ids: bool = False
    connect_timeout_s: float = 10.0
    # The longest wait for the next streamed chunk, the first one (the whole prefill) included.
    read_timeout_s: float = 120.0


class EngineFailure(Exception):
    """The engine could not serve a request; the message says why, for response.done `failed`."""


@dataclass
class _Generation:
    request: GenerationRequest
    sink: OutputSink
    task: asyncio.Task[None] | None = None
    output_chunks: int = 0


@dataclass
class _PendingCall:
    call_id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _StreamResult:
    finish_reason: str | None = None
    usage: ChatUsage | None = None
    finished: bool = False
    # Streamed calls by their index, complete once the stream has ended.
    calls: dict[int, _PendingCall] = field(default_factory=dict)

    def take_call_piece(self, piece: ToolCallDelta) -> None:
        call = self.calls.setdefault(piece.index, _PendingCall())
        call.call_id = piece.id or call.call_id
        if piece.function is not None:
            call.name = piece.function.name or call.name
            call.arguments += piece.function.arguments or ""

    def tool_calls(self, response_id: str) -> list[ToolCall]:
        return [
            ToolCall(
                response_id, call.call_id or f"call_{response_id}_{index}", call.name, call.arguments or "{}"
            )
            for index, call in sorted(self.calls.items())
        ]


class RemoteEngine:
    """Implements port.Engine. Its own thread runs an event loop with one aiohttp session; each
    StartGeneration is one task there, and cancelling the task closes its stream, which is how a
    serving engine learns to stop. Streaming prefill commands are accepted and ignored (local only)."""

    def __init__(self, config: RemoteEngineConfig) -> None:
        self.config = config
        self.model = config.model or ""
        self._base_url = config.base_url.rstrip("/")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="remote-engine", daemon=True)
        self._http: aiohttp.ClientSession | None = None
        self._generations: dict[str, _Generation] = {}
        # Per session: media ids the engine has received with their data.
        self._known_media: dict[str, set[str]] = {}
        self._unreachable: str | None = None
        self._started = False
        self._stopped = False

    # Engine port --------------------------------------------------------------------------------

    def start(self, timeout_s: float | None = None) -> None:
        """Check that the engine answers GET /models (and learn its model name) before serving."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        try:
            future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"the engine at {self._base_url} did not answer in time") from None
        self._started = True

    def send(self, command: EngineCommand, sink: OutputSink) -> None:
        if isinstance(command, StartTranscription):
            # A second chat request: the serving engine transcribes with Gemma 4's ASR instruction.
            command = StartGeneration(transcription_generation(command.request))
        if self._stopped or not self._started:
            if isinstance(command, StartGeneration):
                response_id = command.request.response_id
                sink(GenerationDone(response_id, "error", Usage(), "the remote engine is not running"))
            return
        self._loop.call_soon_threadsafe(self._accept, command, sink)

    def health(self) -> EngineHealth:
        alive = self._started and not self._stopped and self._unreachable is None
        detail = None if alive else (self._unreachable or "the remote engine is not running")
        return EngineHealth(loaded=self._started, alive=alive, model=self.model, detail=detail)

    def stop(self) -> None:
        if self._stopped or not self._thread.is_alive():
            self._stopped = True
            return
        self._stopped = True
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    # On the engine thread -----------------------------------------------------------------------

    async def _open(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.config.connect_timeout_s, sock_read=self.config.read_timeout_s
        )
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        # No connection cap: every running answer holds one stream, and the engine does the scheduling.
        connector = aiohttp.TCPConnector(limit=0)
        self._http = aiohttp.ClientSession(timeout=timeout, headers=headers, connector=connector)
        url = f"{self._base_url}/models"
        try:
            async with self._http.get(url) as response:
                body = await response.read()
                if response.status != 200:
                    status = response.status
                    raise RuntimeError(f"the engine at {url} answered HTTP {status}: {_message(body)}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeError(f"the engine at {url} is unreachable: {_describe(exc)}") from None
        try:
            served = [card.id for card in msgspec.json.decode(body, type=ModelList).data]
        except msgspec.DecodeError:
            raise RuntimeError(f"{url} did not answer with an OpenAI model list: {_message(body)}") from None
        if not self.model:
            if not served:
                raise RuntimeError(f"the engine at {url} serves no model; pass --engine-model")
            self.model = served[0]
        elif self.model not in served:
            log.warning("the engine lists %s, not %s; sending %s anyway", served, self.model, self.model)
        log.info("remote engine at %s serving %s", self._base_url, self.model)

    async def _close(self) -> None:
        tasks = [g.task for g in self._generations.values() if g.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    def _accept(self, command: EngineCommand, sink: OutputSink) -> None:
        if isinstance(command, StartGeneration):
            generation = _Generation(command.request, sink)
            self._generations[command.request.response_id] = generation
            generation.task = self._loop.create_task(self._generate(generation))
        elif isinstance(command, CancelGeneration):
            running = self._generations.get(command.response_id)
            if running is not None and running.task is not None:
                running.task.cancel()
        elif isinstance(command, CloseSession):
            self._known_media.pop(command.session_id, None)
            for running in list(self._generations.values()):
                if running.request.session_id == command.session_id and running.task is not None:
                    running.task.cancel()

    async def _generate(self, generation: _Generation) -> None:
        response_id = generation.request.response_id
        try:
            result = await self._stream(generation)
            for call in result.tool_calls(response_id):
                self._deliver(generation.sink, call)
            done = _finished(response_id, result, generation.output_chunks)
        except asyncio.CancelledError:
            done = GenerationDone(response_id, "cancelled", Usage(output_tokens=generation.output_chunks))
        except EngineFailure as exc:
            log.warning("response %s failed: %s", response_id, exc)
            done = GenerationDone(response_id, "error", Usage(), str(exc))
        except Exception:
            log.exception("response %s: unexpected failure talking to the engine", response_id)
            done = GenerationDone(response_id, "error", Usage(), "internal error in the remote engine")
        finally:
            self._generations.pop(response_id, None)
        self._deliver(generation.sink, done)

    async def _stream(self, generation: _Generation) -> _StreamResult:
        request = generation.request
        known = self._known_media.get(request.session_id, set()) if request.use_session_cache else set()
        plan = self._plan(request, known)
        try:
            return await self._post(plan, generation)
        except _MediaMiss:
            log.info("the engine lost cached media; resending %s with all media", request.response_id)
            self._known_media.pop(request.session_id, None)
            return await self._post(self._plan(request, set()), generation)

    def _plan(self, request: GenerationRequest, known: set[str]) -> ChatRequestPlan:
        try:
            return build_chat_request(
                request, self.model, media_ids=self.config.media_ids, known_media_ids=known
            )
        except UnsupportedContent as exc:
            raise EngineFailure(str(exc)) from None

    async def _post(self, plan: ChatRequestPlan, generation: _Generation) -> _StreamResult:
        assert self._http is not None
        url = f"{self._base_url}/chat/completions"
        try:
            async with self._http.post(url, data=msgspec.json.encode(plan.body), headers=_JSON) as response:
                if response.status >= 400:
                    body = await response.read()
                    if plan.omitted_media and response.status in _MEDIA_MISS_STATUSES:
                        raise _MediaMiss()
                    raise EngineFailure(f"the engine answered HTTP {response.status}: {_message(body)}")
                self._unreachable = None
                self._remember_media(generation.request, plan)
                return await self._read_stream(response, generation)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            self._unreachable = f"the engine at {self._base_url} is unreachable: {_describe(exc)}"
            raise EngineFailure(self._unreachable) from None
        except TimeoutError:
            raise EngineFailure(
                f"the engine sent nothing for {self.config.read_timeout_s:g} s (timeout)"
            ) from None
        except aiohttp.ClientError as exc:
            raise EngineFailure(f"the connection to the engine failed: {_describe(exc)}") from None

    def _remember_media(self, request: GenerationRequest, plan: ChatRequestPlan) -> None:
        if request.use_session_cache and plan.sent_media_ids:
            self._known_media.setdefault(request.session_id, set()).update(plan.sent_media_ids)

    async def _read_stream(self, response: aiohttp.ClientResponse, generation: _Generation) -> _StreamResult:
        decoder = SseDecoder()
        result = _StreamResult()
        async for line in response.content:
            for data in decoder.feed(line):
                if self._take_event(data, result, generation):
                    return result
        for data in decoder.close():
            if self._take_event(data, result, generation):
                return result
        if result.finish_reason is None:
            raise EngineFailure("the engine closed the stream before the answer finished")
        return result

    def _take_event(self, data: str, result: _StreamResult, generation: _Generation) -> bool:
        """Apply one streamed event; True at the stream's end marker."""
        if data.strip() == "[DONE]":
            result.finished = True
            return True
        try:
            chunk = msgspec.json.decode(data, type=ChatChunk)
        except msgspec.DecodeError:
            error = _message(data.encode())
            raise EngineFailure(f"the engine streamed something that is not a chat chunk: {error}") from None
        result.usage = chunk.usage or result.usage
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or ():
                result.take_call_piece(piece)
            text = choice.delta.content
            if text:
                generation.output_chunks += 1
                self._deliver(generation.sink, TextDelta(generation.request.response_id, text))
            result.finish_reason = choice.finish_reason or result.finish_reason
        return False

    def _deliver(self, sink: OutputSink, output: EngineOutput) -> None:
        if self._stopped:
            return
        try:
            sink(output)
        except Exception:
            log.exception("an engine output sink failed")


class _MediaMiss(Exception):
    pass


_JSON = {"Content-Type": "application/json", "Accept": "text/event-stream"}


def _finished(response_id: str, result: _StreamResult, output_chunks: int) -> GenerationDone:
    stop_reason = _STOP_REASONS.get(result.finish_reason or "stop", "end_of_turn")
    return GenerationDone(response_id, stop_reason, _usage(result.usage, output_chunks))


def _usage(usage: ChatUsage | None, output_chunks: int) -> Usage:
    # Engines that report no usage still streamed chunks, one token each in practice.
    if usage is None:
        return Usage(output_tokens=output_chunks)
    details = usage.prompt_tokens_details
    return Usage(
        input_text_tokens=usage.prompt_tokens,
        cached_tokens=(details.cached_tokens or 0) if details else 0,
        output_tokens=usage.completion_tokens,
    )


def _message(body: bytes) -> str:
    """The engine's own error message where it sent one in OpenAI's shape, else the body's start."""
    try:
        return msgspec.json.decode(body, type=ErrorBody).error.message
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or "(empty body)"


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
