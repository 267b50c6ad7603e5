"""RemoteEngine against a scripted upstream (every failure path) and against mlx-vlm's own server."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from realtime.engine.port import (
    AppendAudioTurn,
    AudioPart,
    CancelGeneration,
    CloseSession,
    GenerationDone,
    GenerationRequest,
    ImagePart,
    StartGeneration,
    StartTranscription,
    TextDelta,
    TextPart,
    ToolCall,
    TranscriptionRequest,
    Turn,
)
from realtime.engine.remote import RemoteEngine, RemoteEngineConfig

TIMEOUT_S = 60


def chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if content is None and finish is None else [{"index": 0, "delta": {"content": content}}]
    if finish:
        choices[0]["finish_reason"] = finish
    return {"id": "c1", "model": "scripted", "choices": choices, "usage": usage}


@dataclass
class Upstream:
    """What the scripted engine answers next, and what it saw."""

    url: str = ""
    status: int = 200
    error_body: dict | None = None
    chunks: list[dict] = field(default_factory=list)
    send_done: bool = True
    hang_after_chunks: bool = False
    # Statuses for requests that name media without data (a media cache miss).
    status_without_media: int | None = None
    models_body: bytes | None = None
    bodies: list[dict] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)


UPSTREAM = web.AppKey("upstream", Upstream)


async def _models(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    if upstream.models_body is not None:
        return web.Response(body=upstream.models_body, content_type="text/html")
    return web.json_response({"object": "list", "data": [{"id": "scripted", "object": "model"}]})


def _names_media_without_data(body: dict) -> bool:
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    return any(p.get("uuid") and (p.get("image_url") or p.get("input_audio")) is None for p in parts)


async def _chat(request: web.Request) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    body = await request.json()
    upstream.bodies.append(body)
    if upstream.status_without_media and _names_media_without_data(body):
        return web.json_response({"error": {"message": "unknown uuid"}}, status=upstream.status_without_media)
    if upstream.status != 200:
        return web.json_response(upstream.error_body, status=upstream.status)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        for item in upstream.chunks:
            await response.write(f"data: {json.dumps(item)}\n\n".encode())
        if upstream.hang_after_chunks:
            await asyncio.Event().wait()
        if upstream.send_done:
            await response.write(b"data: [DONE]\n\n")
    except (asyncio.CancelledError, ConnectionResetError):
        upstream.disconnected.set()
        raise
    return response


@contextmanager
def scripted_upstream() -> Iterator[Upstream]:
    upstream = Upstream()
    app = web.Application()
    app[UPSTREAM] = upstream
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, handler_cancellation=True)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstream.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(TIMEOUT_S)
    try:
        yield upstream
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT_S)


@contextmanager
def engine_for(url: str, **config) -> Iterator[RemoteEngine]:
    engine = RemoteEngine(RemoteEngineConfig(base_url=url, **config))
    engine.start(timeout_s=TIMEOUT_S)
    try:
        yield engine
    finally:
        engine.stop()


def text_request(text: str = "hi", response_id: str = "resp_1", **fields) -> GenerationRequest:
    fields.setdefault("turns", (Turn("user", (TextPart(text),), "item_1"),))
    return GenerationRequest("sess_1", response_id, "item_out", "Be brief.", **fields)


def run(engine: RemoteEngine, request: GenerationRequest) -> list:
    outputs: queue.SimpleQueue = queue.SimpleQueue()
    engine.send(StartGeneration(request), outputs.put)
    return collect(outputs)


def collect(outputs: queue.SimpleQueue) -> list:
    received = []
    while not received or not isinstance(received[-1], GenerationDone):
        received.append(outputs.get(timeout=TIMEOUT_S))
    return received


def test_stream_becomes_deltas_then_done_with_usage():
    usage = {"prompt_tokens": 30, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 12}}
    with scripted_upstream() as upstream, engine_for(upstream.url) as engine:
        upstream.chunks = [chunk("Hel"), chunk("lo"), chunk(finish="stop"), chunk(usage=usage)]
        outputs = run(engine, text_request())
        assert engine.model == "scripted" and engine.health().alive
    assert outputs[:2] == [TextDelta("resp_1", "Hel"), TextDelta("resp_1", "lo")]
    done = outputs[-1]
    assert done.stop_reason == "end_of_turn" and done.error_message is None
    assert (done.usage.input_tokens, done.usage.cached_tokens, done.usage.output_tokens) == (30, 12, 2)
    assert upstream.bodies[0]["model"] == "scripted" and upstream.bodies[0]["stream"] is True


def test_streamed_tool_calls_become_tool_call_outputs():
    def call_piece(index, call_id=None, name=None, arguments=None) -> dict:
        function = {"name": name, "arguments": arguments}
        delta = {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]}
        return {"id": "c1", "model": "scripted", "choices": [{"index": 0, "delta": delta}]}

    with scripted_upstream() as upstream, engine_for(upstream.url) as engine:
        upstream.chunks = [
            call_piece(0, "call_a", "get_weather", ""),
            call_piece(0, arguments='{"city":'),
            call_piece(1, "call_b", "get_time", "{}"),
            call_piece(0, arguments='"Paris"}'),
            chunk(finish="tool_calls"),
        ]
        outputs = run(engine, text_request())
    assert outputs[:2] == [
        ToolCall("resp_1", "call_a", "get_weather", '{"city":"Paris"}'),
        ToolCall("resp_1", "call_b", "get_time", "{}"),
    ]
    assert outputs[2].stop_reason == "end_of_turn" and len(outputs) == 3


def test_length_means_max_tokens_and_usage_falls_back_to_chunks():
    with scripted_upstream() as upstream, engine_for(upstream.url, model="mine") as engine:
        upstream.chunks = [chunk("a"), chunk("b"), chunk("c", finish="length")]
        upstream.send_done = False
        done = run(engine, text_request(max_output_tokens=3))[-1]
    assert done.stop_reason == "max_tokens" and done.usage.output_tokens == 3
    assert upstream.bodies[0]["model"] == "mine" and upstream.bodies[0]["max_tokens"] == 3


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": {"message": "audio too long", "type": "invalid_request_error"}},
            "HTTP 400: audio too long",
        ),
        (503, {"detail": "overloaded"}, 'HTTP 503: {"detail": "overloaded"}'),
    ],
)
def test_http_errors_fail_the_response_with_the_engines_message(status, body, expected):
    with scripted_upstream() as upstream, engine_for(upstream.url) as engine:
        upstream.status, upstream.error_body = status, body
        (done,) = run(engine, text_request())
        # The engine goes on: the next request is served.
        upstream.status, upstream.chunks = 200, [chunk("ok", finish="stop")]
        assert run(engine, text_request(response_id="resp_2"))[0] == TextDelta("resp_2", "ok")
    assert done.stop_reason == "error" and expected in done.error_message


def test_a_stream_cut_short_is_an_error():
    with scripted_upstream() as upstream, engine_for(upstream.url) as engine:
        upstream.chunks, upstream.send_done = [chunk("par")], False
        outputs = run(engine, text_request())
    assert outputs[0] == TextDelta("resp_1", "par")
    assert outputs[-1].stop_reason == "error" and "before the answer finished" in outputs[-1].error_message


def test_a_silent_engine_times_out():
    with scripted_upstream() as upstream, engine_for(upstream.url, read_timeout_s=0.5) as engine:
        upstream.chunks, upstream.hang_after_chunks = [chunk("x")], True
        done = run(engine, text_request())[-1]
    assert done.stop_reason == "error" and "timeout" in done.error_message


def test_cancel_closes_the_stream():
    with scripted_upstream() as upstream, engine_for(upstream.url) as engine:
        upstream.chunks, upstream.hang_after_chunks = [chunk("x")], True
        outputs: queue.SimpleQueue = queue.SimpleQueue()
        engine.send(StartGeneration(text_request()), outputs.put)
        assert outputs.get(timeout=TIMEOUT_S) == TextDelta("resp_1", "x")
        engine.send(CancelGeneration("resp_1"), outputs.put)
        done = collect(outputs)[-1]
        assert upstream.disconnected.wait(TIMEOUT_S)
    assert done.stop_reason == "cancelled" and done.usage.output_tokens == 1


def test_close_session_cancels_its_work_and_streaming_prefill_is_ignored():
    with scripted_upstream() as upstream, engine_for(upstream.url) as engine:
        upstream.chunks, upstream.hang_after_chunks = [chunk("x")], True
        outputs: queue.SimpleQueue = queue.SimpleQueue()
        engine.send(AppendAudioTurn("sess_1", np.zeros(160, np.float32)), outputs.put)
        engine.send(StartGeneration(text_request()), outputs.put)
        assert outputs.get(timeout=TIMEOUT_S) == TextDelta("resp_1", "x")
        engine.send(CloseSession("sess_1"), outputs.put)
        assert collect(outputs)[-1].stop_reason == "cancelled"


def test_an_unreachable_engine_fails_start_clearly():
    with scripted_upstream() as upstream:
        url = upstream.url
    engine = RemoteEngine(RemoteEngineConfig(base_url=url, connect_timeout_s=5))
    with pytest.raises(RuntimeError, match=f"the engine at {url}/models is unreachable"):
        engine.start(timeout_s=TIMEOUT_S)
    engine.stop()


def test_an_engine_that_is_no_openai_server_fails_start_clearly():
    with scripted_upstream() as upstream:
        upstream.models_body = b"<html>hello</html>"
        engine = RemoteEngine(RemoteEngineConfig(base_url=upstream.url))
        with pytest.raises(RuntimeError, match="did not answer with an OpenAI model list: <html>hello"):
            engine.start(timeout_s=TIMEOUT_S)
        engine.stop()


def test_an_engine_that_goes_away_fails_requests_and_health():
    with scripted_upstream() as upstream:
        engine = RemoteEngine(RemoteEngineConfig(base_url=upstream.url, connect_timeout_s=5))
        engine.start(timeout_s=TIMEOUT_S)
    try:
        (done,) = run(engine, text_request())
        health = engine.health()
    finally:
        engine.stop()
    assert done.stop_reason == "error" and "is unreachable" in done.error_message
    assert health.loaded and not health.alive and "is unreachable" in health.detail


def spoken_image_turn(item_id: str) -> Turn:
    samples = (0.3 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    image = ImagePart(Image.new("RGB", (40, 30), (0, 120, 255)), key="blue")
    return Turn("user", (image, AudioPart(samples, f"{item_id}/0/0"), TextPart("?")), item_id)


def test_media_ids_skip_known_media_and_resend_when_the_engine_lost_it():
    first_turn = spoken_image_turn("item_1")
    with scripted_upstream() as upstream, engine_for(upstream.url, media_ids=True) as engine:
        upstream.chunks = [chunk("ok", finish="stop")]
        run(engine, text_request(turns=(first_turn,)))
        follow_up = (
            first_turn,
            Turn("assistant", (TextPart("ok"),), "item_2"),
            Turn("user", (TextPart("and?"),), "item_3"),
        )
        run(engine, text_request(response_id="resp_2", turns=follow_up))
        upstream.status_without_media = 400
        done = run(engine, text_request(response_id="resp_3", turns=follow_up))[-1]
    first, second, missed, resent = upstream.bodies
    assert not _names_media_without_data(first) and _names_media_without_data(second)
    assert _names_media_without_data(missed) and not _names_media_without_data(resent)
    assert done.stop_reason == "end_of_turn"


def test_a_transcription_is_a_second_request_with_gemmas_asr_instruction_and_the_clip():
    clip = AudioPart(np.zeros(8_000, np.float32), "item_1/0")
    with scripted_upstream() as upstream, engine_for(upstream.url) as engine:
        upstream.chunks = [chunk("turn on"), chunk(" the light"), chunk(finish="stop")]
        outputs: queue.SimpleQueue = queue.SimpleQueue()
        engine.send(StartTranscription(TranscriptionRequest("sess_1", "tr_1", (clip,), "en")), outputs.put)
        received = collect(outputs)
    assert [o.text for o in received[:-1]] == ["turn on", " the light"]
    assert received[-1].response_id == "tr_1" and received[-1].stop_reason == "end_of_turn"
    (body,) = upstream.bodies
    (message,) = body["messages"]
    text, audio = message["content"]
    assert message["role"] == "user" and "Transcribe the following speech segment in English" in text["text"]
    assert audio["type"] == "input_audio" and audio["input_audio"]["format"] == "wav"
