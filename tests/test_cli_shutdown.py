"""The real CLI process with the demo model: start, talk, stop mid-answer, twenty times; always exit 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from tests.conftest import pcm16_b64, tone

ROOT = Path(__file__).resolve().parent.parent
N_CYCLES = 20
TIMEOUT_S = 120


def start_server() -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "realtime", "serve", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()  # blocks until the server prints where it listens
    assert "listening on" in line, process.communicate(timeout=TIMEOUT_S)
    return process, int(line.rsplit(":", 1)[1])


async def stop_mid_answer(process: subprocess.Popen, port: int, cycle: int) -> int | None:
    """A spoken turn, then the signal mid-answer: on odd cycles with the session open (it must get 1001),
    on even ones after the client vanished without a close (the case that used to abort)."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
        for _ in range(6):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(100))}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": "inf"}}))
        while (
            json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))["type"] != "response.output_text.delta"
        ):
            pass
        if cycle % 2 == 0:
            ws.transport.abort()
            process.send_signal(signal.SIGTERM)
            return None
        process.send_signal(signal.SIGINT)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        return ws.close_code


@pytest.mark.slow
def test_twenty_start_session_stop_cycles_all_exit_zero():
    outcomes = []
    for cycle in range(N_CYCLES):
        process, port = start_server()
        try:
            close_code = asyncio.run(stop_mid_answer(process, port, cycle))
            _, stderr = process.communicate(timeout=TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
        outcomes.append((process.returncode, close_code))
        assert "terminate called" not in stderr and "Traceback" not in stderr, stderr
    assert outcomes == [(0, None if cycle % 2 == 0 else 1001) for cycle in range(N_CYCLES)]
