"""The `mlx-realtime` command: serve, and build the demo model. Logging is set up here, once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .session.settings import MAX_OUTPUT_TOKENS_LIMIT, SessionSettings

if TYPE_CHECKING:
    # The server module pulls in the engine; `make-demo-model` and `--help` should not pay for it.
    from .server import RealtimeServer, ServerConfig

log = logging.getLogger("realtime")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MLX_REALTIME_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-realtime",
        description="OpenAI-Realtime-compatible voice-and-vision server for Gemma 4 on MLX.",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="logging verbosity (env MLX_REALTIME_LOG_LEVEL; default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the realtime server")
    serve.add_argument(
        "--host",
        default=_env("HOST", "127.0.0.1"),
        help="bind address (env MLX_REALTIME_HOST; default 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(_env("PORT", "8000") or 8000),
        help="TCP port, 0 picks a free one (env MLX_REALTIME_PORT; default 8000)",
    )
    serve.add_argument(
        "--model",
        default=_env("MODEL"),
        help="local directory or Hugging Face repo id of a gemma4 / gemma4_unified model "
        "(env MLX_REALTIME_MODEL; default: the embedded tiny demo model, which answers random text)",
    )
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
        "--max-message-bytes",
        type=int,
        default=int(_env("MAX_MESSAGE_BYTES", str(16 * 1024 * 1024)) or 0),
        help="largest client message; bigger ones close the connection with 1009 "
        "(env MLX_REALTIME_MAX_MESSAGE_BYTES; default 16 MiB)",
    )
    serve.add_argument(
        "--max-inflight-bytes",
        type=int,
        default=int(_env("MAX_INFLIGHT_BYTES", str(64 * 1024 * 1024)) or 0),
        help="client bytes received but not yet handled, over all sessions; past it events are refused "
        "with an error (env MLX_REALTIME_MAX_INFLIGHT_BYTES; default 64 MiB)",
    )
    serve.add_argument(
        "--send-timeout",
        dest="send_timeout_s",
        type=float,
        default=float(_env("SEND_TIMEOUT_S", "10") or 10),
        help="seconds a send may stay blocked by a client that does not read before its answer is "
        "cancelled and it is closed with 1008 (env MLX_REALTIME_SEND_TIMEOUT_S; default 10)",
    )
    serve.add_argument(
        "--instructions",
        default=_env("INSTRUCTIONS", SessionSettings.instructions),
        help="default system instructions (env MLX_REALTIME_INSTRUCTIONS)",
    )
    serve.add_argument(
        "--max-output-tokens",
        type=int,
        default=int(_env("MAX_OUTPUT_TOKENS", "1024") or 1024),
        help=f"default cap on tokens per answer, 1-{MAX_OUTPUT_TOKENS_LIMIT} (env MLX_REALTIME_MAX_OUTPUT_TOKENS; default 1024)",
    )
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=int(_env("MAX_SESSIONS", "16") or 16),
        help="concurrent sessions before new ones are closed with 1013 (env MLX_REALTIME_MAX_SESSIONS; default 16)",
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
        "--web-dir",
        type=Path,
        default=Path(_env("WEB_DIR") or Path(__file__).resolve().parent.parent / "web"),
        help="directory of the browser client served at / (env MLX_REALTIME_WEB_DIR)",
    )

    demo = commands.add_parser("make-demo-model", help="write the tiny random-weight Gemma 4 demo model")
    demo.add_argument("directory", type=Path)
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.command == "make-demo-model":
        from .engine.demo_model import build_demo_model

        path = build_demo_model(args.directory, seed=args.seed)
        print(f"wrote the demo model to {path}")
        return 0
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from .engine.loading import resolve_model_path
    from .engine.mlx_backend import MlxBackend
    from .engine.worker import EngineWorker
    from .server import RealtimeServer

    if args.host not in LOOPBACK_HOSTS and not args.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach it can use the model", args.host)
    model_path, is_demo = resolve_model_path(args.model)
    if is_demo:
        log.warning(
            "NO MODEL GIVEN: serving the embedded tiny demo model (random weights). It proves the "
            "pipeline works but its answers are random text. Pass --model for a real Gemma 4."
        )
    worker = EngineWorker(MlxBackend(model_path))
    try:
        server = RealtimeServer(_server_config(args), worker)
    except ValueError as exc:  # a bad --allowed-origin or limit, before the model loads
        log.error("%s", exc)
        return 2
    log.info("loading %s", model_path)
    worker.start()
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


def _server_config(args: argparse.Namespace) -> ServerConfig:
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
    )


async def _run(server: RealtimeServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = server.bind()
    await server.serve()
    url_host = "127.0.0.1" if server.config.host in ("0.0.0.0", "::") else server.config.host
    # Scripts and tests wait for this exact line on stdout.
    print(f"mlx-realtime listening on http://{url_host}:{port}", flush=True)
    log.info(
        "open http://%s:%s in a browser; WebSocket at ws://%s:%s/v1/realtime", url_host, port, url_host, port
    )
    await stop.wait()
    log.info("shutting down: closing sessions")
    await server.shutdown()
    # The engine stops while the loop still runs, so no output is sent to a closed loop.
    await asyncio.to_thread(server.engine.stop)
    log.info("stopped")
