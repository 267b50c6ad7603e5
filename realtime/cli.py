"""The `mlx-realtime` command: serve, and build the demo model. Logging is set up here, once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .session.settings import MAX_OUTPUT_TOKENS_LIMIT, SessionSettings
from .startup import StartupError, bind_listener, one_line, resolve_model, start_engine, tls_context
from .web_files import default_web_dir

if TYPE_CHECKING:
    # The server module pulls in the engine; `make-demo-model` and `--help` should not pay for it.
    from .server import RealtimeServer

log = logging.getLogger("realtime")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
MAX_SESSIONS_LIMIT = 1024
EXIT_RUNTIME_FAILURE = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (what, why, where to look) and exit 2, as argparse's own do."""

    subcommands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MLX_REALTIME_{name}", default)


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be {low}-{high}")
        return value

    return parse


def _package_version() -> str:
    try:
        return version("mlx-realtime")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-level",
        default=default,
        choices=LOG_LEVELS,
        type=str.upper,
        help="logging verbosity; DEBUG also prints tracebacks (env MLX_REALTIME_LOG_LEVEL; default INFO)",
    )


def build_parser() -> _Parser:
    parser = _Parser(
        prog="mlx-realtime",
        description="OpenAI-Realtime-compatible voice-and-vision server for Gemma 4 on MLX.",
    )
    parser.add_argument("--version", action="version", version=f"mlx-realtime {_package_version()}")
    _add_log_level(parser, (_env("LOG_LEVEL", "INFO") or "INFO").upper())
    commands = parser.add_subparsers(dest="command", required=True)
    parser.subcommands = commands.choices
    _add_serve_arguments(commands.add_parser("serve", help="run the realtime server"))
    demo = commands.add_parser("make-demo-model", help="write the tiny random-weight Gemma 4 demo model")
    demo.add_argument("directory", type=Path)
    demo.add_argument("--seed", type=int, default=0)
    # SUPPRESS: given after the subcommand it overrides the top-level value; absent, it leaves it alone.
    for subcommand in (commands.choices["serve"], demo):
        _add_log_level(subcommand, argparse.SUPPRESS)
    return parser


def _add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    # String defaults go through `type` like typed-in values, so a bad environment variable is a usage error.
    _add_listening_arguments(serve)
    _add_model_arguments(serve)


def _add_listening_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--host",
        default=_env("HOST", "127.0.0.1"),
        help="bind address (env MLX_REALTIME_HOST; default 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=int_in_range(0, 65535),
        default=_env("PORT", "8000"),
        help="TCP port, 0 picks a free one (env MLX_REALTIME_PORT; default 8000)",
    )
    serve.add_argument(
        "--api-key",
        default=_env("API_KEY"),
        help="require this key (Bearer header or browser subprotocol) (env MLX_REALTIME_API_KEY)",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        default=_env("TLS_CERT"),
        help="PEM certificate chain: serve https:// and wss:// on the same port; needs --tls-key "
        "(env MLX_REALTIME_TLS_CERT)",
    )
    serve.add_argument(
        "--tls-key",
        type=Path,
        default=_env("TLS_KEY"),
        help="PEM private key of --tls-cert (env MLX_REALTIME_TLS_KEY)",
    )
    serve.add_argument(
        "--metrics-token",
        default=_env("METRICS_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on GET /metrics (env MLX_REALTIME_METRICS_TOKEN; "
        "default: /metrics is open)",
    )
    serve.add_argument(
        "--web-dir",
        type=Path,
        default=Path(_env("WEB_DIR") or default_web_dir()),
        help="directory of the browser client served at / (env MLX_REALTIME_WEB_DIR; "
        "default: the client shipped with the package)",
    )


def _add_model_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--model",
        default=_env("MODEL"),
        help="local directory or Hugging Face repo id of a gemma4 / gemma4_unified model "
        "(env MLX_REALTIME_MODEL; default: the embedded tiny demo model, which answers random text)",
    )
    serve.add_argument(
        "--instructions",
        default=_env("INSTRUCTIONS", SessionSettings.instructions),
        help="default system instructions (env MLX_REALTIME_INSTRUCTIONS)",
    )
    serve.add_argument(
        "--max-output-tokens",
        type=int_in_range(1, MAX_OUTPUT_TOKENS_LIMIT),
        default=_env("MAX_OUTPUT_TOKENS", "1024"),
        help=f"default cap on tokens per answer, 1-{MAX_OUTPUT_TOKENS_LIMIT} "
        "(env MLX_REALTIME_MAX_OUTPUT_TOKENS; default 1024)",
    )
    serve.add_argument(
        "--max-sessions",
        type=int_in_range(1, MAX_SESSIONS_LIMIT),
        default=_env("MAX_SESSIONS", "16"),
        help=f"concurrent sessions before new ones are closed with 1013, 1-{MAX_SESSIONS_LIMIT} "
        "(env MLX_REALTIME_MAX_SESSIONS; default 16)",
    )
    serve.add_argument(
        "--no-streaming-prefill",
        dest="streaming_prefill",
        action="store_false",
        default=(_env("STREAMING_PREFILL", "1") or "1") not in ("0", "false", "no"),
        help="encode each spoken turn only after it is committed, instead of while it is spoken "
        "(env MLX_REALTIME_STREAMING_PREFILL=0); the baseline for benchmarks/latency.py",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and (args.tls_cert is None) != (args.tls_key is None):
        parser.subcommands["serve"].error("--tls-cert and --tls-key go together: give both or neither")
    _configure_logging(args.log_level)
    try:
        if args.command == "make-demo-model":
            return _make_demo_model(args)
        return _serve(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a start-up failure is one line; DEBUG adds the traceback
        log.debug("start-up failed", exc_info=True)
        line = str(exc) if isinstance(exc, StartupError) else _unexpected_failure(exc)
        print(f"mlx-realtime: error: {line}", file=sys.stderr, flush=True)
        return EXIT_RUNTIME_FAILURE


def _unexpected_failure(exc: Exception) -> str:
    return (
        f"start-up failed: {type(exc).__name__}: {one_line(str(exc))}; "
        "rerun with --log-level DEBUG for the traceback and report it if it looks like a bug"
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # websockets logs every plain HTTP reply (static files, /healthz) as a "rejected" handshake.
    logging.getLogger("websockets.server").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _make_demo_model(args: argparse.Namespace) -> int:
    from .engine.demo_model import build_demo_model

    started = time.monotonic()
    print(f"building the demo model in {args.directory} (a few seconds)", flush=True)
    path = build_demo_model(args.directory, seed=args.seed)
    print(f"wrote the demo model to {path} in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .engine.mlx_backend import MlxBackend
    from .engine.worker import EngineWorker
    from .server import RealtimeServer, ServerConfig

    if args.host not in LOOPBACK_HOSTS and not args.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach it can use the model", args.host)
    ssl_context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    listener = bind_listener(args.host, args.port)
    model_path, is_demo = resolve_model(args.model)
    if is_demo:
        log.warning(
            "NO MODEL GIVEN: serving the embedded tiny demo model (random weights). It proves the "
            "pipeline works but its answers are random text. Pass --model for a real Gemma 4."
        )
    worker = EngineWorker(MlxBackend(model_path))
    start_engine(worker, model_path)
    defaults = SessionSettings(
        model=args.model or "gemma-4-demo",
        instructions=args.instructions,
        max_output_tokens=args.max_output_tokens,
    )
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_sessions=args.max_sessions,
        web_dir=args.web_dir,
        session_defaults=defaults,
        streaming_prefill=args.streaming_prefill,
        demo_model=is_demo,
        ssl_context=ssl_context,
        metrics_token=args.metrics_token,
        listener=listener,
    )
    try:
        asyncio.run(_run(RealtimeServer(config, worker)))
    except KeyboardInterrupt:
        pass
    return 0


async def _run(server: RealtimeServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server.running() as ws_server:
        host, port = next(iter(ws_server.sockets)).getsockname()[:2]
        url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        secure = server.config.ssl_context is not None
        http, ws = ("https", "wss") if secure else ("http", "ws")
        # Scripts and tests wait for this exact line on stdout.
        print(f"mlx-realtime listening on {http}://{url_host}:{port}", flush=True)
        log.info(
            "open %s://%s:%s in a browser; WebSocket at %s://%s:%s/v1/realtime",
            http,
            url_host,
            port,
            ws,
            url_host,
            port,
        )
        await stop.wait()
        log.info("shutting down")
    # The engine stops while the loop still runs, so no output is sent to a closed loop.
    await asyncio.to_thread(server.engine.stop)
