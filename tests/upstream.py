"""Third-party serving engines for tests: mlx-vlm's own OpenAI-compatible server on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_TIMEOUT_S = 180
_READY_MARKER = "Uvicorn running on "


@contextmanager
def mlx_vlm_server(model_dir: Path) -> Iterator[str]:
    """`python -m mlx_vlm.server` on 127.0.0.1, a free port; yields its base URL ("http://…/v1")."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlx_vlm.server",
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    found: list[str] = []
    log: list[str] = []

    def watch() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if _READY_MARKER in line and not found:
                found.append(line.split(_READY_MARKER, 1)[1].split()[0])
                ready.set()
        ready.set()  # the process ended before it was ready

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(STARTUP_TIMEOUT_S) or not found:
            raise RuntimeError("mlx_vlm.server did not start:\n" + "".join(log[-30:]))
        yield found[0] + "/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
