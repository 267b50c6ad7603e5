"""The HTTP API on loopback in front of an engine, and test audio in the formats clients send."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.worker import EngineWorker
from realtime.session.settings import SessionSettings
from tests.conftest import serve_engine_in_thread

TIMEOUT_S = 60


@contextmanager
def serve_http_api(engine, model: str = "gemma-4-test", **config) -> Iterator[str]:
    """The real server in front of `engine` (started here, stopped after); yields "http://127.0.0.1:PORT"."""
    with serve_engine_in_thread(engine, session_defaults=SessionSettings(model=model), **config) as address:
        yield f"http://{address}"


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
