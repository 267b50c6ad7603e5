"""Servers as subprocesses for tests: mlx-vlm's own OpenAI-compatible server, and our CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

STARTUP_TIMEOUT_S = 180
ROOT = Path(__file__).resolve().parent.parent
UVICORN_READY = re.compile(r"Uvicorn running on (http://\S+)")
OURS_READY = re.compile(r"mlx-realtime listening on (http://\S+)")


@contextmanager
def served_process(argv: Sequence[str], ready: re.Pattern[str]) -> Iterator[str]:
    """Runs `argv` from the repository root; yields the URL its log announces, and ends it after."""
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    announced = threading.Event()
    found: list[str] = []
    log: list[str] = []

    def watch() -> None:
        # Read to the end: a full pipe would block the server's logging, and so the server.
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            match = ready.search(line)
            if match and not found:
                found.append(match.group(1))
                announced.set()
        announced.set()  # the process ended before it was ready

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not announced.wait(STARTUP_TIMEOUT_S) or not found:
            raise RuntimeError(f"{argv[:4]} did not start:\n" + "".join(log[-30:]))
        yield found[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def mlx_vlm_server(model_dir: Path) -> Iterator[str]:
    """`python -m mlx_vlm.server` on 127.0.0.1, a free port; yields its base URL ("http://…/v1")."""
    argv = [
        sys.executable,
        "-m",
        "mlx_vlm.server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    with served_process(argv, UVICORN_READY) as url:
        yield url + "/v1"
