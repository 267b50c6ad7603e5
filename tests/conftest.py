"""Shared test helpers: driving a session, strict SDK validation, test media made on the spot."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import os
import queue
import re
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The agent-framework clients run from their own pinned venv (README's test command), not this one.
collect_ignore = ["clients"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on (https?://\S+)")
SERVER_START_TIMEOUT_S = 120
CLI_TIMEOUT_S = 120


def require_tool(name: str) -> str:
    """The path of a system tool; in CI a missing tool fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (apt-get install {name})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@functools.cache
def _server_event_adapter():
    # Building the adapter for the SDK's union takes ~0.1 s: once per test run, not once per event.
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    return TypeAdapter(RealtimeServerEvent)


def strict_server_event(wire: str | dict):
    """Parse a server event with the openai SDK's own models, strictly, as pipecat and the Agents SDK do."""
    data = json.loads(wire) if isinstance(wire, str) else wire
    return _server_event_adapter().validate_python(data, strict=False)


def png_data_uri(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_of_size(width: int, height: int) -> bytes:
    # A valid all-black 1-bit PNG written row by row: a few dozen KB however many pixels.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def pcm16_b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


def tone(duration_ms: int, rate_hz: int = 24000, amplitude: int = 8000, freq_hz: float = 220.0) -> np.ndarray:
    t = np.arange(duration_ms * rate_hz // 1000) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def silence(duration_ms: int, rate_hz: int = 24000) -> np.ndarray:
    return np.zeros(duration_ms * rate_hz // 1000, dtype=np.int16)


@contextmanager
def serve_in_thread(backend, **config) -> Iterator[str]:
    """The real server with a local engine on `backend`; yields "127.0.0.1:PORT"."""
    from realtime.engine.worker import EngineWorker

    with serve_engine_in_thread(EngineWorker(backend), **config) as address:
        yield address


@contextmanager
def serve_engine_in_thread(engine, **config) -> Iterator[str]:
    """The real server in front of `engine` (started here, stopped after), on loopback port 0, on its own
    event loop thread; yields "127.0.0.1:PORT"."""
    from realtime.server import RealtimeServer, ServerConfig

    engine.start(timeout_s=300)
    server = RealtimeServer(ServerConfig(port=0, **config), engine)
    loop = asyncio.new_event_loop()
    ready: queue.Queue[str] = queue.Queue()
    stop = loop.create_future()

    async def run() -> None:
        async with server.running() as ws_server:
            ready.put(f"127.0.0.1:{next(iter(ws_server.sockets)).getsockname()[1]}")
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=60)
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(timeout=30)
        engine.stop()


def cli_env(**overrides: str) -> dict[str, str]:
    """A CLI subprocess's environment: the defaults under test, whatever the developer's shell exports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_REALTIME_")}
    return {**env, **overrides}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime", *args],
        cwd=REPO,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's one line; nothing on stderr may look like a traceback."""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@contextmanager
def cli_server(
    args: list[str],
    log_path: Path,
    *,
    python: str = sys.executable,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`python -m realtime serve ARGS` as a subprocess; yields its URL once it prints its listening line.
    Its stderr goes to log_path; it is terminated on exit."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [python, "-m", "realtime", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=cwd,
            env=env if env is not None else cli_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump_lines, args=(process.stdout, lines), daemon=True).start()
        try:
            yield _wait_listening(lines, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _pump_lines(stream, lines: queue.Queue[str | None]) -> None:
    # Keeps draining stdout so a chatty server never blocks on a full pipe.
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_listening(lines: queue.Queue[str | None], log_path: Path) -> str:
    while True:
        try:
            line = lines.get(timeout=SERVER_START_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"server printed no listening line; log:\n{log_path.read_text()}")
        if line is None:
            pytest.fail(f"server exited before listening; log:\n{log_path.read_text()}")
        match = LISTENING.search(line)
        if match:
            return match.group(1)
