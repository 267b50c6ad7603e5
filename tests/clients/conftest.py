"""The real server for the client tests: `python -m realtime serve` on loopback, from the server's venv.

These tests run in their own pinned virtualenv (tests/clients/requirements.txt): pipecat's pins
(soxr, soundfile) are below the server's, so the server cannot be imported here. It runs as a
subprocess of the interpreter in MLX_REALTIME_SERVER_PYTHON, with this checkout first on its path.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 300
TIMEOUT_S = 120
RATE_HZ = 24000  # the clients' PCM16 rate
LISTENING = re.compile(r"mlx-realtime listening on http://([^\s]+)")


@dataclass
class RunningServer:
    host: str  # "127.0.0.1:PORT"
    log_lines: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}/v1/realtime"


def _server_python() -> str:
    python = os.environ.get("MLX_REALTIME_SERVER_PYTHON") or str(REPO_ROOT / ".venv" / "bin" / "python")
    if not Path(python).exists():
        pytest.fail(f"no server interpreter at {python}: set MLX_REALTIME_SERVER_PYTHON (README)")
    # Absolute but not resolved: a venv's python is a symlink, and resolving it would leave the venv.
    return os.path.abspath(python)


def _pump(stream, lines: list[str], announced: queue.Queue[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))
        match = LISTENING.search(line)
        if match:
            announced.put(match.group(1))
    announced.put("")  # the process ended


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """One server for all client tests: each test opens its own sessions on it."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [_server_python(), "-m", "realtime", "--log-level", "INFO", "serve", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = RunningServer(host="")
    announced: queue.Queue[str] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(process.stdout, running.log_lines, announced), daemon=True)
    pump.start()
    try:
        running.host = announced.get(timeout=SERVER_START_TIMEOUT_S)
        if not running.host:
            pytest.fail("the server exited before listening:\n" + "\n".join(running.log_lines[-40:]))
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        pump.join(timeout=10)


@pytest.fixture
def server_errors(server: RunningServer) -> Iterator[None]:
    """Fails the test if the server refused a client event, or logged an error or a traceback."""
    start = len(server.log_lines)
    yield
    markers = (" ERROR ", "Traceback", "refused a client event")
    logged = [line for line in server.log_lines[start:] if any(marker in line for marker in markers)]
    assert not logged, "the server logged errors:\n" + "\n".join(server.log_lines[start:][-80:])


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def client_error_logs() -> Iterator[list[logging.LogRecord]]:
    """Error records any client library logged (LiveKit and the Agents SDK log rather than raise)."""
    handler = _ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


def spoken_pcm16(text: str, rate_hz: int) -> bytes:
    """espeak-ng speech as raw PCM16 mono at rate_hz, converted by sox (no server code here)."""
    espeak, sox = require_tool("espeak-ng"), require_tool("sox")
    wav = subprocess.run([espeak, "--stdout", text], capture_output=True, check=True).stdout
    command = [
        sox,
        "-t",
        "wav",
        "-",
        "-t",
        "raw",
        "-r",
        str(rate_hz),
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        "-L",
        "-",
    ]
    return subprocess.run(command, input=wav, capture_output=True, check=True).stdout


def spoken_turn(text: str) -> bytes:
    """One user turn as 24 kHz PCM16: a little silence, the sentence, then enough silence for any VAD."""
    return silence_pcm16(300, RATE_HZ) + spoken_pcm16(text, RATE_HZ) + silence_pcm16(1500, RATE_HZ)


def silence_pcm16(duration_ms: int, rate_hz: int) -> bytes:
    return bytes(2 * rate_hz * duration_ms // 1000)


# The demo model ends its turns (after ~10-67 tokens): the cap is only a guard well above that, and
# only `completed` passes.
ANSWER_CAP_TOKENS = 256
# A call is grammar-constrained (tool_choice "required") and ends by itself; the cap must not cut it.
TOOL_CALL_CAP_TOKENS = 256


def assert_answer_finished(response: dict) -> None:
    assert response["status"] == "completed", response


def unexpected(records: list[logging.LogRecord]) -> list[str]:
    """Client error logs, with their exceptions."""
    return [record.getMessage() + str(record.exc_info or "") for record in records]
