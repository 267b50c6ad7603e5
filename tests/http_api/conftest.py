"""The HTTP API on loopback in front of an engine, and test audio in the formats clients send."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile
from aiohttp import web

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.worker import EngineWorker
from realtime.http_api.routes import HttpApi

TIMEOUT_S = 60


@contextmanager
def serve_http_api(engine, model: str = "gemma-4-test", **options) -> Iterator[str]:
    """`engine` (started here, stopped after) behind the HTTP API; yields "http://127.0.0.1:PORT"."""
    engine.start(timeout_s=300)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(HttpApi(engine, model, **options).routes())
    runner = web.AppRunner(app)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(TIMEOUT_S)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT_S)
        engine.stop()


def tone_16k(duration_s: float, rate_hz: int = 16000) -> np.ndarray:
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def audio_b64(samples: np.ndarray, rate_hz: int, audio_format: str) -> str:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate_hz, format=audio_format.upper())
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def backend():
    """The scripted engine: its answer describes what it was given."""
    return FakeBackend()


@pytest.fixture(scope="module")
def base_url(backend):
    with serve_http_api(EngineWorker(backend)) as url:
        yield url
