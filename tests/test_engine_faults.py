"""Engine faults over the real server: a failing request fails only its response; a dead engine fails fast."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import websockets

from realtime.engine.fake_backend import FakeBackend, describe_request
from tests.test_server import TIMEOUT_S, recv_until, running_server


class FaultyBackend(FakeBackend):
    """Raises inside generation when the user says "boom"; kills the engine thread on "die"."""

    def generate(self, request, should_stop):
        said = describe_request(request)
        if said == "text:die":
            raise SystemExit("injected: the engine thread dies")
        steps = super().generate(request, should_stop)
        yield next(steps)
        if said == "text:boom":
            raise RuntimeError("injected: the model failed mid-answer")
        yield from steps


async def ask(ws, text: str) -> dict:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    return (await recv_until(ws, "response.done"))[-1]["response"]


def healthz(host: str) -> dict:
    with urllib.request.urlopen(f"http://{host}/healthz", timeout=TIMEOUT_S) as reply:
        return json.loads(reply.read())


async def test_an_exception_in_one_request_fails_only_that_response():
    async with running_server(backend=FaultyBackend(seconds_per_token=0.002)) as (host, _):
        url = f"ws://{host}/v1/realtime"
        async with websockets.connect(url) as first, websockets.connect(url) as second:
            failed, other = await asyncio.gather(ask(first, "boom"), ask(second, "fine"))
            assert failed["status"] == "failed"
            assert "injected: the model failed" in failed["status_details"]["error"]["message"]
            assert other["status"] == "completed"
            assert (await ask(first, "next turn"))["status"] == "completed"
        assert (await asyncio.to_thread(healthz, host))["status"] == "ok"


async def test_a_dead_engine_thread_fails_responses_fast_and_shows_in_healthz():
    async with running_server(backend=FaultyBackend()) as (host, _):
        async with websockets.connect(f"ws://{host}/v1/realtime") as ws:
            dying = await ask(ws, "die")
            assert dying["status"] == "failed"
            assert "engine thread died" in dying["status_details"]["error"]["message"]
            health = await asyncio.to_thread(healthz, host)
            assert health["status"] == "failed" and health["engine_alive"] is False
            assert health["detail"] == "the engine thread is not running"
            after = await asyncio.wait_for(ask(ws, "hello?"), 2)
            assert after["status"] == "failed"
            assert after["status_details"]["error"]["message"] == "the engine is not running"
