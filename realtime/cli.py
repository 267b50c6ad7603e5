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
    import socket
    import ssl

    # The server module pulls in the engine; `make-demo-model` and `--help` should not pay for it.
    from .server import RealtimeServer, ServerConfig

log = logging.getLogger("realtime")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
MAX_SESSIONS_LIMIT = 1024
MIB = 1024 * 1024
MAX_MESSAGE_MIB_LIMIT = 1024
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


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range: it must be above 0 and at most 3600")
    return value


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
    _add_access_arguments(serve)
    _add_model_arguments(serve)
    _add_limit_arguments(serve)


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
        "--web-dir",
        type=Path,
        default=Path(_env("WEB_DIR") or default_web_dir()),
        help="directory of the browser client served at / (env MLX_REALTIME_WEB_DIR; "
        "default: the client shipped with the package)",
    )


def _add_access_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--api-key",
        default=_env("API_KEY"),
        help="require this key (Bearer header or browser subprotocol) (env MLX_REALTIME_API_KEY)",
    )
    serve.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        default=[o for o in (_env("ALLOWED_ORIGINS") or "").split(",") if o.strip()],
        metavar="ORIGIN",
        help="also accept browser pages from this origin (scheme://host[:port]; repeatable; '*' for any); "
        "the server's own origin and loopback pages always are "
        "(env MLX_REALTIME_ALLOWED_ORIGINS, comma-separated)",
    )
    serve.add_argument(
        "--metrics-token",
        default=_env("METRICS_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on GET /metrics (env MLX_REALTIME_METRICS_TOKEN; "
        "default: /metrics is open)",
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
    serve.add_argument(
        "--context-tokens",
        type=int_in_range(64, 1 << 24),
        default=_env("CONTEXT_TOKENS"),
        help="tokens one session's prompt and answer may hold, at most the model's context; sessions "
        "truncate their conversations to fit (env MLX_REALTIME_CONTEXT_TOKENS; default: the model's)",
    )


def _add_limit_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--max-message-bytes",
        type=int_in_range(1024, MAX_MESSAGE_MIB_LIMIT * MIB),
        default=_env("MAX_MESSAGE_BYTES", str(16 * MIB)),
        help="largest client message; bigger ones close the connection with 1009 "
        "(env MLX_REALTIME_MAX_MESSAGE_BYTES; default 16 MiB)",
    )
    serve.add_argument(
        "--max-inflight-bytes",
        type=int_in_range(1024, MAX_MESSAGE_MIB_LIMIT * MIB),
        default=_env("MAX_INFLIGHT_BYTES", str(64 * MIB)),
        help="client bytes received but not yet handled, over all sessions; past it events are refused "
        "with an error; at least --max-message-bytes (env MLX_REALTIME_MAX_INFLIGHT_BYTES; default 64 MiB)",
    )
    serve.add_argument(
        "--send-timeout",
        dest="send_timeout_s",
        type=positive_seconds,
        default=_env("SEND_TIMEOUT_S", "10"),
        help="seconds a send may stay blocked by a client that does not read before its answer is "
        "cancelled and it is closed with 1008 (env MLX_REALTIME_SEND_TIMEOUT_S; default 10)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        _check_serve_arguments(parser.subcommands["serve"], args)
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


def _check_serve_arguments(serve: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot check one flag at a time; a failure is a usage error (exit 2)."""
    from .access import allowed_origin_set

    if (args.tls_cert is None) != (args.tls_key is None):
        serve.error("--tls-cert and --tls-key go together: give both or neither")
    if args.max_inflight_bytes < args.max_message_bytes:
        serve.error("--max-inflight-bytes must be at least --max-message-bytes, or large messages never pass")
    try:
        allowed_origin_set(args.allowed_origins)
    except ValueError as exc:
        serve.error(f"argument --allowed-origin: {exc}")


def _unexpected_failure(exc: Exception) -> str:
    return (
        f"start-up failed: {type(exc).__name__}: {one_line(str(exc))}; "
        "rerun with --log-level DEBUG for the traceback and report it if it looks like a bug"
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


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
    from .server import RealtimeServer

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
    worker = EngineWorker(MlxBackend(model_path, context_tokens=args.context_tokens))
    server = RealtimeServer(_server_config(args, is_demo, ssl_context, listener), worker)
    start_engine(worker, model_path)
    try:
        asyncio.run(_run(server))
    except KeyboardInterrupt:
        pass
    # Everything is closed and the engine thread joined. Skipping the interpreter's teardown keeps
    # MLX's native state from being destroyed there, off its thread ("terminate called …", exit 134).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _server_config(
    args: argparse.Namespace, is_demo: bool, ssl_context: ssl.SSLContext | None, listener: socket.socket
) -> ServerConfig:
    from .server import ServerConfig

    defaults = SessionSettings(
        model=args.model or "gemma-4-demo",
        instructions=args.instructions,
        max_output_tokens=args.max_output_tokens,
    )
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        allowed_origins=tuple(args.allowed_origins),
        max_sessions=args.max_sessions,
        max_message_bytes=args.max_message_bytes,
        max_inflight_bytes=args.max_inflight_bytes,
        send_timeout_s=args.send_timeout_s,
        web_dir=args.web_dir,
        session_defaults=defaults,
        streaming_prefill=args.streaming_prefill,
        demo_model=is_demo,
        ssl_context=ssl_context,
        metrics_token=args.metrics_token,
        listener=listener,
    )


async def _run(server: RealtimeServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = server.bind()
    await server.serve()
    url_host = "127.0.0.1" if server.config.host in ("0.0.0.0", "::") else server.config.host
    http, ws = ("https", "wss") if server.config.ssl_context is not None else ("http", "ws")
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
    log.info("shutting down: closing sessions")
    await server.shutdown()
    # The engine stops while the loop still runs, so no output is sent to a closed loop.
    await asyncio.to_thread(server.engine.stop)
    log.info("stopped")
