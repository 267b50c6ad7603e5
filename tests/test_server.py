"""The real server on loopback with the scripted engine: routes, auth, the SDK client, raw error paths."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager

import pytest
import websockets
from openai import AsyncOpenAI

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.worker import EngineWorker
from realtime.server import RealtimeServer, ServerConfig
from tests.conftest import pcm16_b64, silence, strict_server_event, tone

TIMEOUT_S = 20


@asynccontextmanager
async def running_server(backend=None, **config):
    worker = EngineWorker(backend or FakeBackend(seconds_per_token=0.002))
    worker.start(timeout_s=TIMEOUT_S)
    server = RealtimeServer(ServerConfig(port=0, **config), worker)
    try:
        async with server.running() as ws_server:
            port = next(iter(ws_server.sockets)).getsockname()[1]
            yield f"127.0.0.1:{port}", server
    finally:
        worker.stop()


def http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


async def recv_until(ws, event_type: str) -> list[dict]:
    events = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        strict_server_event(raw)
        events.append(json.loads(raw))
        if events[-1]["type"] == event_type:
            return events


async def test_healthz_and_static_files():
    async with running_server() as (host, _):
        status, content_type, body = await asyncio.to_thread(http_get, f"http://{host}/healthz")
        health = json.loads(body)
        assert status == 200 and content_type == "application/json"
        assert health["model_loaded"] is True and health["sessions"] == 0 and health["uptime_s"] >= 0
        assert health["demo_model"] is False
        status, content_type, body = await asyncio.to_thread(http_get, f"http://{host}/")
        assert status == 200 and content_type == "text/html" and b"<html" in body.lower()
        status, _, _ = await asyncio.to_thread(http_get, f"http://{host}/../pyproject.toml")
        assert status == 404
        status, _, _ = await asyncio.to_thread(http_get, f"http://{host}/%2e%2e/pyproject.toml")
        assert status == 404


async def test_openai_sdk_text_and_audio_conversation():
    async with running_server() as (host, server):
        client = AsyncOpenAI(base_url=f"http://{host}/v1", api_key="unused")
        async with client.realtime.connect(model="gemma-4") as connection:
            created = await connection.recv()
            assert created.type == "session.created"
            await connection.session.update(
                session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
            )
            assert (await connection.recv()).type == "session.updated"
            await connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
            )
            await connection.response.create()
            text_events = await _collect_sdk(connection)
            await connection.input_audio_buffer.append(audio=pcm16_b64(tone(600)))
            await connection.input_audio_buffer.commit()
            await connection.response.create()
            audio_events = await _collect_sdk(connection)
    for events, expected in ((text_events, "text:hello"), (audio_events, "audio:600ms")):
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert "".join(deltas) == expected
        done = events[-1]
        assert done.type == "response.done" and done.response.status == "completed"
        assert done.response.output[0].content[0].text == expected
    assert "input_audio_buffer.committed" in [e.type for e in audio_events]


async def _collect_sdk(connection) -> list:
    events = []
    while True:
        raw = await asyncio.wait_for(connection.recv_bytes(), TIMEOUT_S)
        strict_server_event(raw.decode())
        events.append(connection.parse_event(raw))
        if events[-1].type == "response.done":
            return events


async def test_api_key_header_subprotocol_and_rejection():
    async with running_server(api_key="s3cret") as (host, _):
        url = f"ws://{host}/v1/realtime?model=x"
        with pytest.raises(websockets.InvalidStatus) as rejected:
            await websockets.connect(url)
        assert rejected.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(url, additional_headers={"Authorization": "Bearer wrong"})
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert ws.subprotocol is None
            assert json.loads(await ws.recv())["type"] == "session.created"
        async with websockets.connect(url, subprotocols=["realtime", "openai-insecure-api-key.s3cret"]) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "session.created"


async def test_raw_error_paths_keep_the_session_open():
    async with running_server() as (host, _):
        async with websockets.connect(f"ws://{host}/v1/realtime") as ws:
            await recv_until(ws, "session.created")
            for bad in ["not json", json.dumps({"type": "bogus", "event_id": "e9"}), json.dumps([1])]:
                await ws.send(bad)
                (error,) = await recv_until(ws, "error")
                assert error["error"]["code"] in {"invalid_json", "unknown_event_type", "invalid_event"}
            assert error["error"]["event_id"] is None
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(300))}))
            await ws.send(json.dumps({"type": "response.create"}))
            events = await recv_until(ws, "response.done")
            assert events[-1]["response"]["status"] == "completed"


async def test_beta_event_names_on_request():
    async with running_server() as (host, _):
        headers = {"OpenAI-Beta": "realtime=v1"}
        async with websockets.connect(f"ws://{host}/v1/realtime", additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}))
            await ws.send(json.dumps({"type": "response.create"}))
            types = []
            while "response.done" not in types:
                types.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))["type"])
    assert "response.text.delta" in types and "response.text.done" in types
    assert "response.output_text.delta" not in types


async def test_too_many_sessions_closes_with_1013_and_cancels_on_disconnect():
    backend = FakeBackend(reply=lambda r: " ".join(["word"] * 2000), seconds_per_token=0.002)
    async with running_server(backend=backend, max_sessions=1) as (host, server):
        async with websockets.connect(f"ws://{host}/v1/realtime") as first:
            await recv_until(first, "session.created")
            async with websockets.connect(f"ws://{host}/v1/realtime") as second:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(second.recv(), TIMEOUT_S)
                assert second.close_code == 1013
            await first.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}))
            await first.send(json.dumps({"type": "response.create"}))
            await recv_until(first, "response.output_text.delta")
        session_id = backend.requests[0].session_id
        for _ in range(200):
            if session_id in backend.dropped_sessions:
                break
            await asyncio.sleep(0.01)
        assert session_id in backend.dropped_sessions
        assert server.health()["sessions"] == 0


async def test_too_big_a_message_closes_with_1009_and_plain_http_gets_426():
    async with running_server(max_message_bytes=4096, max_inflight_bytes=8192) as (host, _):
        async with websockets.connect(f"ws://{host}/v1/realtime") as ws:
            await recv_until(ws, "session.created")
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 8000}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
            assert ws.close_code == 1009
        status, _, body = await asyncio.to_thread(http_get, f"http://{host}/v1/realtime")
        assert status == 426 and b"WebSocket" in body


async def test_shutdown_closes_sessions_with_1001_and_cancels_their_answers():
    backend = FakeBackend(reply=lambda r: " ".join(["word"] * 5000), seconds_per_token=0.002)
    async with running_server(backend=backend) as (host, server):
        ws = await websockets.connect(f"ws://{host}/v1/realtime")
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        await recv_until(ws, "response.output_text.delta")
        await server.shutdown()
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        assert ws.close_code == 1001 and server.health()["sessions"] == 0
        for _ in range(200):
            if backend.dropped_sessions:
                break
            await asyncio.sleep(0.01)
        assert backend.dropped_sessions == [backend.requests[0].session_id]


async def test_extra_routes_share_the_port_and_win_over_static_files():
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": await request.json()})

    async def not_a_file(request: web.Request) -> web.Response:
        return web.Response(text="route, not file")

    worker = EngineWorker(FakeBackend())
    worker.start(timeout_s=TIMEOUT_S)
    server = RealtimeServer(ServerConfig(port=0), worker, extra_routes=[web.post("/v1/echo", echo)])
    server.app.router.add_get("/index.html", not_a_file)
    try:
        port = server.bind()
        async with server.running():
            url = f"http://127.0.0.1:{port}/v1/echo"
            request = urllib.request.Request(url, data=b'{"a": 1}', method="POST")
            reply = await asyncio.to_thread(urllib.request.urlopen, request, timeout=TIMEOUT_S)
            assert json.loads(reply.read()) == {"got": {"a": 1}}
            _, _, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/index.html")
            assert body == b"route, not file"
    finally:
        worker.stop()


async def test_a_stalled_handshake_is_closed_after_the_request_timeout():
    def stall(host: str, data: bytes) -> bytes:
        address, port = host.split(":")
        with socket.create_connection((address, int(port)), timeout=TIMEOUT_S) as sock:
            sock.sendall(data)
            return sock.recv(100)  # b"" once the server closes

    async with running_server(request_timeout_s=0.5) as (host, _):
        started = time.monotonic()
        partial = b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n"
        closed = await asyncio.gather(asyncio.to_thread(stall, host, b""), asyncio.to_thread(stall, host, partial))
        assert closed == [b"", b""] and time.monotonic() - started < TIMEOUT_S / 2
