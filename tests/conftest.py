"""Shared test helpers: driving a session, strict SDK validation, test media made on the spot."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """The path of a system tool; in CI a missing tool fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (apt-get install {name})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def strict_server_event(wire: str | dict):
    """Parse a server event with the openai SDK's own models, strictly, as pipecat and the Agents SDK do."""
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    data = json.loads(wire) if isinstance(wire, str) else wire
    return TypeAdapter(RealtimeServerEvent).validate_python(data, strict=False)


def png_data_uri(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pcm16_b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


def tone(duration_ms: int, rate_hz: int = 24000, amplitude: int = 8000, freq_hz: float = 220.0) -> np.ndarray:
    t = np.arange(duration_ms * rate_hz // 1000) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def silence(duration_ms: int, rate_hz: int = 24000) -> np.ndarray:
    return np.zeros(duration_ms * rate_hz // 1000, dtype=np.int16)
