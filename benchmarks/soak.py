"""A long voice session, simulated faster than real time: answer latency and server memory over the hour."""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

from benchmarks.latency import (
    ESPEAK_WPM,
    OURS_READY,
    RATE_HZ,
    RESPONSE_TIMEOUT_S,
    RESULTS_DIR,
    SENTENCES,
    _machine,
    _open_session,
    _speak,
    served_process,
)

CHUNK_MS = 40
LEAD_IN_MS = 300
# Sent as fast as the speech: enough silence for the server's default VAD (500 ms) to end the turn.
TRAILING_SILENCE_MS = 700
METRIC = (
    "input_audio_buffer.speech_stopped -> first response.output_text.delta, on the client's clock at "
    "receipt; each turn is three espeak-ng sentences and 700 ms of silence sent at --speed times real "
    "time, then silence at real time until the answer starts; the client waits for response.done "
    "before the next turn. Faster than real time the engine has a backlog of audio to encode when the "
    "turn ends, so latency is higher than with live speech (benchmarks/latency.py)"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--minutes", type=float, default=60.0, help="simulated session length, minutes of audio (default 60)")
    add("--model", type=Path, help="a Gemma 4 directory (default: the tiny demo model)")
    add(
        "--speed",
        type=float,
        default=10.0,
        help="speech sent this many times faster than real time (default 10)",
    )
    add(
        "--context-tokens",
        type=int,
        default=4096,
        help="the server's --context-tokens, small so the hour moves the window many times (default 4096)",
    )
    add("--max-output-tokens", type=int, default=4, help="answer cap, so decoding adds little (default 4)")
    add("--out", default="soak", help="result name under benchmarks/results (default soak)")
    return parser.parse_args()


def _turn_audio(speech: np.ndarray) -> list[bytes]:
    n_bytes = RATE_HZ * CHUNK_MS // 1000 * 2
    lead_in = bytes(RATE_HZ * LEAD_IN_MS // 1000 * 2)
    data = lead_in + speech.tobytes()
    return [data[i : i + n_bytes] for i in range(0, len(data), n_bytes)]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _send_turn(ws, chunks: list[bytes], speed: float, answered: asyncio.Event) -> int:
    """The turn at `speed`, then silence at real time until the answer starts, as an open mic: the hour
    is compressed only while the user speaks. Returns the chunks sent."""
    silence = bytes(len(chunks[0]))
    n_fast = len(chunks) + TRAILING_SILENCE_MS // CHUNK_MS
    start = time.monotonic()
    for i in itertools.count():
        if i >= n_fast and answered.is_set():
            return i
        chunk = chunks[i] if i < len(chunks) else silence
        await ws.send(
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
        )
        # Paced, so the server hears the turn while it is "spoken" (streaming prefill), only faster.
        sent_s = min(i + 1, n_fast) * CHUNK_MS / 1000 / speed + max(0, i + 1 - n_fast) * CHUNK_MS / 1000
        await asyncio.sleep(max(0.0, start + sent_s - time.monotonic()))
    raise AssertionError("unreachable")


async def _receive_turn(ws, answered: asyncio.Event, seen: list[str]) -> dict:
    stopped_at = first_delta_at = None
    while True:
        event = json.loads(await ws.recv())
        now = time.monotonic()
        seen.append(event["type"])
        if event["type"] == "input_audio_buffer.speech_stopped" and stopped_at is None:
            stopped_at = now
        elif event["type"] == "response.output_text.delta" and first_delta_at is None:
            first_delta_at = now
            answered.set()
        elif event["type"] == "error":
            raise RuntimeError(f"server error: {event['error']}")
        elif event["type"] == "response.done":
            answered.set()
            response = event["response"]
            latency_ms = None
            if stopped_at is not None and first_delta_at is not None:
                latency_ms = (first_delta_at - stopped_at) * 1000
            return {"latency_ms": latency_ms, "status": response["status"], "usage": response["usage"]}


async def soak(
    url: str, pid: int, args: argparse.Namespace, turns: list[list[bytes]]
) -> tuple[dict, list[dict]]:
    samples: list[dict] = []
    simulated_s, started = 0.0, time.monotonic()
    async with connect(
        url.replace("http://", "ws://") + "/v1/realtime", compression=None, max_size=None
    ) as ws:
        session = await _open_session(ws, args.max_output_tokens)
        samples.append({"turn": 0, "simulated_min": 0.0, "wall_s": 0.0, "rss_mb": _rss_mb(pid)})
        while simulated_s < args.minutes * 60:
            chunks = turns[len(samples) % len(turns)]
            answered, seen = asyncio.Event(), []
            try:
                async with asyncio.timeout(RESPONSE_TIMEOUT_S), asyncio.TaskGroup() as group:
                    sender = group.create_task(_send_turn(ws, chunks, args.speed, answered))
                    result = await group.create_task(_receive_turn(ws, answered, seen))
            except TimeoutError:
                raise RuntimeError(f"turn {len(samples)} got no answer; it saw {seen[-12:]}") from None
            simulated_s += sender.result() * CHUNK_MS / 1000
            usage = result.pop("usage")
            samples.append(
                {
                    "turn": len(samples),
                    "simulated_min": simulated_s / 60,
                    "wall_s": time.monotonic() - started,
                    "rss_mb": _rss_mb(pid),
                    **result,
                    "input_tokens": usage["input_tokens"],
                    "cached_tokens": usage["input_token_details"]["cached_tokens"],
                }
            )
    return session, samples


def summarize(samples: list[dict], minutes: float) -> dict:
    turns = samples[1:]
    moves = [t for prev, t in zip(turns, turns[1:], strict=False) if t["input_tokens"] < prev["input_tokens"]]
    steady = [t for t in turns[1:] if t not in moves]
    buckets = []
    for start in np.arange(0, minutes, 10):
        inside = [
            t["latency_ms"] for t in turns if start <= t["simulated_min"] < start + 10 and t["latency_ms"]
        ]
        if inside:
            buckets.append(
                {
                    "from_min": float(start),
                    "n_turns": len(inside),
                    "latency_p50_ms": float(np.percentile(inside, 50)),
                    "latency_p95_ms": float(np.percentile(inside, 95)),
                }
            )
    rss = [s["rss_mb"] for s in samples]
    return {
        "n_turns": len(turns),
        "statuses": {s: sum(t["status"] == s for t in turns) for s in sorted({t["status"] for t in turns})},
        "window_moves": len(moves),
        "latency_by_10_min": buckets,
        "latency_p50_ms_steady": float(
            np.percentile([t["latency_ms"] for t in steady if t["latency_ms"]], 50)
        ),
        "latency_p50_ms_at_moves": float(
            np.percentile([t["latency_ms"] for t in moves if t["latency_ms"]], 50)
        )
        if moves
        else None,
        "cached_share_p50_steady": float(np.median([t["cached_tokens"] / t["input_tokens"] for t in steady])),
        "max_input_tokens": max(t["input_tokens"] for t in turns),
        "rss_mb": {
            "after_open": rss[0],
            "after_first_turn": rss[1],
            "at_end": rss[-1],
            "max": max(rss),
            "end_minus_first_turn": rss[-1] - rss[1],
        },
    }


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = samples[1:]
    minutes = [t["simulated_min"] for t in turns]
    figure, (latency, memory, tokens) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    latency.plot(minutes, [t["latency_ms"] for t in turns], ".", markersize=3)
    latency.set_ylabel("speech_stopped → first delta (ms)")
    memory.plot([s["simulated_min"] for s in samples], [s["rss_mb"] for s in samples])
    memory.set_ylabel("server RSS (MB)")
    tokens.plot(minutes, [t["input_tokens"] for t in turns], label="input tokens")
    tokens.plot(minutes, [t["cached_tokens"] for t in turns], label="cached tokens")
    tokens.set_ylabel("tokens")
    tokens.set_xlabel("simulated session time (min)")
    tokens.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


async def run(args: argparse.Namespace) -> dict:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    # Three sentences a turn (~8 s): an hour is a few hundred turns, as in a conversation.
    cycled = SENTENCES * 3
    texts = [" ".join(cycled[i : i + 3]) for i in range(0, 3 * len(SENTENCES), 3)]
    turns = [_turn_audio(_speak(text, ESPEAK_WPM)) for text in texts]
    argv = [
        sys.executable,
        "-m",
        "realtime",
        "serve",
        "--port",
        "0",
        "--context-tokens",
        str(args.context_tokens),
    ]
    argv += ["--model", str(args.model)] if args.model else []
    started = time.monotonic()
    async with served_process(argv, OURS_READY, "mlx-realtime") as (url, process):
        session, samples = await soak(url, process.pid, args, turns)
    return {
        "machine": _machine(),
        "model": "demo gemma4 (random weights)" if args.model is None else str(args.model),
        "metric": METRIC,
        "settings": {
            "minutes": args.minutes,
            "speed": args.speed,
            "context_tokens": args.context_tokens,
            "max_output_tokens": args.max_output_tokens,
            "chunk_ms": CHUNK_MS,
            "truncation": session.get("truncation"),
            "rate_hz": RATE_HZ,
        },
        "wall_s": time.monotonic() - started,
        "summary": summarize(samples, args.minutes),
        "samples": samples,
    }


def main() -> None:
    args = parse_args()
    report = asyncio.run(run(args))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report["samples"], RESULTS_DIR / f"{args.out}.png")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
