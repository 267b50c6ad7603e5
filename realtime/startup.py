"""Start-up steps of `serve` that can fail: the listening socket, the model, the engine's first load.

Each failure is a StartupError whose message is one line: what failed, why, and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import socket
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .engine.cuda_graphs import use_cuda_graphs

if TYPE_CHECKING:
    from .engine.port import Engine

log = logging.getLogger("realtime")


MAX_REASON_CHARS = 400


class StartupError(Exception):
    def __init__(self, what: str, why: str, todo: str) -> None:
        super().__init__(f"{what}: {one_line(why)}; {todo}")


def one_line(text: str) -> str:
    """Library messages can span lines (tokenizers, mlx); the start-up report is one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 1] + "…"


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind the server's socket before anything slow happens, so a busy port fails in a second."""
    what = f"cannot listen on {host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(
            what, f"{host!r} is not a known host name ({exc.strerror})", "check --host"
        ) from exc
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise StartupError(what, *_bind_failure(exc)) from exc
    listener.setblocking(False)
    return listener


def _bind_failure(exc: OSError) -> tuple[str, str]:
    if exc.errno == errno.EADDRINUSE:
        return (
            "the port is already in use",
            "stop the other server or choose another --port (0 picks a free one)",
        )
    if exc.errno == errno.EACCES:
        return "permission denied", "ports below 1024 need privileges: choose a --port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "that address does not belong to this machine", "check --host (127.0.0.1 or 0.0.0.0)"
    return exc.strerror or str(exc), "check --host and --port"


def tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """The server side of TLS for https:// and wss:// on the one port."""
    what = f"cannot use --tls-cert {cert_path} --tls-key {key_path}"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_path, key_path)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            why = f"not a PEM certificate chain and its private key ({exc.reason or exc})"
        else:
            why = f"{exc.strerror or exc}: {exc.filename or cert_path}"
        raise StartupError(
            what, why, "pass a PEM certificate (chain) and the PEM key that matches it"
        ) from exc
    return context


def resolve_model(spec: str | None) -> tuple[Path, bool]:
    """The checkpoint directory (building the demo or downloading as needed) and whether it is the demo."""
    from .engine.demo_model import default_demo_dir
    from .engine.loading import (
        ModelNotFoundError,
        UnsupportedModelError,
        is_repo_id,
        read_model_type,
        resolve_model_path,
    )

    if spec is None and not (default_demo_dir() / "config.json").is_file():
        log.info("building the tiny demo model in %s (first start only, a few seconds)", default_demo_dir())
    elif spec is not None and is_repo_id(spec):
        log.info("fetching %s from Hugging Face (cached files are reused; a progress bar follows)", spec)
    started = time.monotonic()
    try:
        path, is_demo = resolve_model_path(spec)
        read_model_type(path)
    except ModelNotFoundError as exc:
        todo = (
            "check the repo id and the network, or pass a local model directory"
            if spec and is_repo_id(spec)
            else "pass a Gemma 4 model directory (with config.json) or a Hugging Face repo id"
        )
        raise StartupError(f"cannot use --model {spec}", str(exc), todo) from exc
    except UnsupportedModelError as exc:
        raise StartupError(f"cannot serve --model {spec}", str(exc), "pass a Gemma 4 checkpoint") from exc
    log.info("model files ready in %s (%.1f s)", path, time.monotonic() - started)
    return path, is_demo


def start_engine(engine: Engine, model_path: Path) -> None:
    """Load and warm the model; the first start of a model on a device also compiles its kernels."""
    use_cuda_graphs()
    marker = _warm_marker(model_path)
    if marker.exists():
        log.info("loading %s and warming up", model_path)
    else:
        log.info(
            "loading %s and warming up: compiling kernels, first start only (a minute or more on a GPU)",
            model_path,
        )
    started = time.monotonic()
    try:
        engine.start()
    except Exception as exc:  # noqa: BLE001 - every load failure becomes one line; DEBUG logs the traceback
        log.debug("engine start failed", exc_info=True)
        cause = exc.__cause__ or exc
        raise StartupError(
            f"cannot load the model in {model_path}",
            f"{type(cause).__name__}: {cause}",
            "check that it is a complete Gemma 4 checkpoint (--log-level DEBUG shows the traceback)",
        ) from exc
    log.info("model ready in %.1f s", time.monotonic() - started)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _warm_marker(model_path: Path) -> Path:
    import mlx.core as mx

    from .engine.demo_model import cache_root

    # Compiled kernels depend on the model, the device and the MLX build.
    key = f"{model_path.resolve()}|{mx.default_device()}|{mx.__version__}"
    return cache_root() / "warmed" / hashlib.sha256(key.encode()).hexdigest()[:16]
