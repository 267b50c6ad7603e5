"""End-of-speech to first-word latency on live, real-time speech: streaming prefill against two baselines."""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import io
import itertools
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlx.core as mx  # noqa: E402
import mlx_vlm  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from realtime.audio.formats import AudioFormat  # noqa: E402
from realtime.audio.segmenter import SpeechStarted, SpeechStopped, VadSettings  # noqa: E402
from realtime.engine.demo_model import ensure_demo_model  # noqa: E402
from realtime.session.settings import SessionSettings  # noqa: E402
from tests.audio.speech import run_pipeline  # noqa: E402

REPO_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).parent / "results"
RATE_HZ = 24000
WIRE_FORMAT = AudioFormat("audio/pcm", RATE_HZ)
ESPEAK_WPM = 175  # espeak-ng's default speaking rate
ESPEAK_WPM_RANGE = (80, 450)
LEAD_IN_MS = 500  # silence before speech: a mic that is already open when the user starts
READY_TIMEOUT_S = 600  # the first serve may build the demo model
RESPONSE_TIMEOUT_S = 120
SENTENCES = (
    "What time is it now?",
    "Please turn on the light in the kitchen.",
    "Open the window before the rain comes in.",
    "My brother bought a new bicycle last week.",
    "Nobody knew where the old map was hidden.",
    "Can you remind me about the meeting tomorrow morning?",
    "The train to the city leaves at half past nine.",
    "She planted tomatoes and beans in the garden.",
    "We should call the plumber about the leaking pipe.",
    "How far is it from here to the nearest station?",
)
LIVE_METRIC = (
    "input_audio_buffer.speech_stopped -> first response.output_text.delta, on the client's monotonic clock "
    "at receipt; the speech is streamed at real time, then silence until the answer starts"
)
CHAT_METRIC = (
    "no VAD there: a streamed chat-completions request sent at the moment the utterance ends -> first "
    "non-empty content delta; its audio is what our VAD commits: 300 ms of silence, the speech, 500 ms "
    "of silence"
)
SYSTEM_NAMES = ("streaming_prefill", "no_streaming_prefill", "mlx_vlm_server")
OURS_READY = re.compile(r"mlx-realtime listening on (http://\S+)")
UVICORN_READY = re.compile(r"Uvicorn running on (http://\S+)")


@dataclass(frozen=True)
class Utterance:
    target_s: float
    text: str
    words_per_min: int
    speech: np.ndarray  # int16 at RATE_HZ, trimmed to the voice

    @property
    def speech_s(self) -> float:
        return len(self.speech) / RATE_HZ


@dataclass(frozen=True)
class System:
    name: str
    label: str
    argv: list[str]
    ready: re.Pattern[str]
    measure: Callable[[str, Utterance], Awaitable[dict]]
    metric: str


# Speech -----------------------------------------------------------------------------------------


def _speak(text: str, words_per_min: int) -> np.ndarray:
    argv = ["espeak-ng", "-s", str(words_per_min), "--stdout", text]
    wav = subprocess.run(argv, capture_output=True, check=True).stdout
    samples, rate_hz = sf.read(io.BytesIO(wav), dtype="float32")
    # espeak-ng pads its output with silence; the utterance is the voice alone.
    loud = np.flatnonzero(np.abs(samples) > 0.01 * np.abs(samples).max())
    voice = soxr.resample(samples[loud[0] : loud[-1] + 1], rate_hz, RATE_HZ)
    return np.rint(np.clip(voice * 0.5, -1, 1) * 32767).astype(np.int16)


def make_utterance(target_s: float) -> Utterance:
    """Whole sentences until about the target length, then the speaking rate tuned to hit it."""
    sentences: list[str] = []
    for sentence in itertools.cycle(SENTENCES):
        sentences.append(sentence)
        if len(_speak(" ".join(sentences), ESPEAK_WPM)) >= 0.8 * target_s * RATE_HZ:
            break
    text, words_per_min = " ".join(sentences), ESPEAK_WPM
    speech = _speak(text, words_per_min)
    for _ in range(3):  # espeak-ng's duration is close to, not exactly, inverse to its rate
        if abs(len(speech) / RATE_HZ - target_s) <= 0.03 * target_s:
            break
        scaled = round(words_per_min * len(speech) / RATE_HZ / target_s)
        words_per_min = int(np.clip(scaled, *ESPEAK_WPM_RANGE))
        speech = _speak(text, words_per_min)
    return Utterance(target_s, text, words_per_min, speech)


def check_single_turn(utterance: Utterance, chunk_ms: int) -> None:
    """Sentence pauses must stay under the VAD's silence wait, or the server would answer mid-utterance."""
    settings = VadSettings()
    silence = np.zeros(RATE_HZ * (LEAD_IN_MS + 2 * settings.silence_duration_ms) // 1000, np.int16)
    data = np.concatenate([silence[: RATE_HZ * LEAD_IN_MS // 1000], utterance.speech, silence]).tobytes()
    _, events = run_pipeline(data, WIRE_FORMAT, [_chunk_n_bytes(chunk_ms)], settings)
    kinds = [type(event) for event in events]
    if kinds != [SpeechStarted, SpeechStopped]:
        raise RuntimeError(f"the {utterance.target_s:g} s utterance is not one VAD turn: {kinds}")


def _chunk_n_bytes(chunk_ms: int) -> int:
    return RATE_HZ * chunk_ms // 1000 * 2


# Servers ----------------------------------------------------------------------------------------


@asynccontextmanager
async def served(system: System) -> AsyncIterator[str]:
    """Starts the server, yields its base URL once it says it listens, and always ends the process."""
    async with served_process(system.argv, system.ready, system.name) as (url, _):
        yield url


@asynccontextmanager
async def served_process(
    argv: list[str], ready: re.Pattern[str], name: str
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """As `served`, yielding the process too (to watch its memory)."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    log_tail: deque[str] = deque(maxlen=40)
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def drain() -> None:
        # Read to the end: a full pipe would block the server's logging, and so the server.
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            log_tail.append(line)
            match = ready.search(line)
            if match and not url.done():
                url.set_result(match.group(1))
        if not url.done():
            url.set_exception(RuntimeError(f"{name} exited before listening:\n" + "\n".join(log_tail)))

    reader = asyncio.create_task(drain())
    try:
        yield await asyncio.wait_for(url, READY_TIMEOUT_S), process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader


# Our server: live audio over the Realtime WebSocket -----------------------------------------------


async def _send_live(ws, utterance: Utterance, chunk_ms: int, answered: asyncio.Event, marks: dict) -> None:
    """Paced like a mic: chunk i leaves at start + i * chunk_ms; silence follows until the answer starts."""
    n_bytes = _chunk_n_bytes(chunk_ms)
    lead_in = bytes(n_bytes * (LEAD_IN_MS // chunk_ms))
    speech = utterance.speech.tobytes()
    speech += bytes(-len(speech) % n_bytes)  # whole chunks keep the pacing exact
    data = lead_in + speech
    chunks = [data[i : i + n_bytes] for i in range(0, len(data), n_bytes)]
    silence = bytes(n_bytes)
    start = time.monotonic()
    for i in itertools.count():
        audio = base64.b64encode(chunks[i] if i < len(chunks) else silence).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        if i == len(chunks) - 1:
            marks["speech_end_sent"] = time.monotonic()
        if answered.is_set():
            return
        await asyncio.sleep(max(0.0, start + (i + 1) * chunk_ms / 1000 - time.monotonic()))


async def _receive(ws, events: list[tuple[float, dict]], answered: asyncio.Event) -> None:
    async for message in ws:
        event = json.loads(message)
        events.append((time.monotonic(), event))
        if event["type"] == "response.output_text.delta":
            answered.set()
        elif event["type"] == "response.done":
            return
        elif event["type"] == "error":
            raise RuntimeError(f"server error: {event['error']}")
    raise RuntimeError("the server closed the session before the answer was done")


async def _open_session(ws, max_output_tokens: int) -> dict:
    await ws.recv()  # session.created
    session = {
        "type": "realtime",
        "output_modalities": ["text"],
        "max_output_tokens": max_output_tokens,
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE_HZ}}},
    }
    await ws.send(json.dumps({"type": "session.update", "session": session}))
    while (event := json.loads(await ws.recv()))["type"] != "session.updated":
        if event["type"] == "error":
            raise RuntimeError(f"session.update refused: {event['error']}")
    return event["session"]


async def measure_realtime(url: str, utterance: Utterance, *, max_output_tokens: int, chunk_ms: int) -> dict:
    """speech_stopped -> first text delta, both as received, on a fresh session."""
    events: list[tuple[float, dict]] = []
    answered, marks = asyncio.Event(), {}
    ws_url = url.replace("http://", "ws://") + "/v1/realtime"
    async with connect(ws_url, compression=None, max_size=None) as ws:
        session = await _open_session(ws, max_output_tokens)
        async with asyncio.timeout(utterance.speech_s + RESPONSE_TIMEOUT_S), asyncio.TaskGroup() as group:
            group.create_task(_receive(ws, events, answered))
            group.create_task(_send_live(ws, utterance, chunk_ms, answered, marks))
    return _realtime_sample(events, marks, session)


def _first(events: list[tuple[float, dict]], event_type: str) -> tuple[float, dict]:
    return next((t, event) for t, event in events if event["type"] == event_type)


def _realtime_sample(events: list[tuple[float, dict]], marks: dict, session: dict) -> dict:
    first_delta_at, _ = _first(events, "response.output_text.delta")
    stopped_at, stopped = _first(events, "input_audio_buffer.speech_stopped")
    n_stops = sum(e["type"] == "input_audio_buffer.speech_stopped" for t, e in events if t <= first_delta_at)
    if n_stops != 1 or "speech_end_sent" not in marks:
        raise RuntimeError(f"VAD split the utterance: {n_stops} turns before the answer")
    _, done = _first(events, "response.done")
    return {
        "latency_ms": (first_delta_at - stopped_at) * 1000,
        "speech_end_to_first_delta_ms": (first_delta_at - marks["speech_end_sent"]) * 1000,
        "speech_stopped_to_response_created_ms": (_first(events, "response.created")[0] - stopped_at) * 1000,
        "server_audio_end_ms": stopped["audio_end_ms"],
        "response_status": done["response"]["status"],
        "usage": done["response"].get("usage"),
        "turn_detection": session["audio"]["input"]["turn_detection"],
    }


# mlx-vlm's server: the finished utterance as one chat-completions request ---------------------------


def _wav_base64(utterance: Utterance) -> str:
    # What our VAD commits: the prefix padding, the speech, then the silence wait.
    settings = VadSettings()
    before = np.zeros(RATE_HZ * settings.prefix_padding_ms // 1000, np.int16)
    after = np.zeros(RATE_HZ * settings.silence_duration_ms // 1000, np.int16)
    buffer = io.BytesIO()
    samples = np.concatenate([before, utterance.speech, after])
    sf.write(buffer, samples, RATE_HZ, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()


def _chat_first_delta(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    sent_at = time.monotonic()
    first_delta_at, usage = None, None
    with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_S) as response:
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[len(b"data: ") :])
            usage = chunk.get("usage") or usage
            content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
            if content and first_delta_at is None:
                first_delta_at = time.monotonic()
    if first_delta_at is None:
        raise RuntimeError("mlx-vlm streamed no content")
    return {"latency_ms": (first_delta_at - sent_at) * 1000, "usage": usage}


async def measure_chat(url: str, utterance: Utterance, *, model: str, max_output_tokens: int) -> dict:
    audio_part = {"type": "input_audio", "input_audio": {"data": _wav_base64(utterance), "format": "wav"}}
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_output_tokens,
        "messages": [
            {"role": "system", "content": SessionSettings.instructions},
            {"role": "user", "content": [audio_part]},
        ],
    }
    # In a thread: the event loop keeps draining the server's log pipe meanwhile.
    return await asyncio.to_thread(_chat_first_delta, url, json.dumps(body).encode())


# The run ----------------------------------------------------------------------------------------


def build_systems(args: argparse.Namespace, model_dir: Path) -> list[System]:
    ours = [sys.executable, "-m", "realtime", "serve", "--port", "0"]
    ours += ["--model", str(args.model)] if args.model else []
    vlm = [sys.executable, *"-m mlx_vlm.server --host 127.0.0.1 --port 0 --model".split(), str(model_dir)]
    tokens = args.max_output_tokens
    live = functools.partial(measure_realtime, max_output_tokens=tokens, chunk_ms=args.chunk_ms)
    chat = functools.partial(measure_chat, model=str(model_dir), max_output_tokens=tokens)
    systems = [
        System("streaming_prefill", "ours, streaming prefill", ours, OURS_READY, live, LIVE_METRIC),
        System("no_streaming_prefill", "ours, encode after commit", [*ours, "--no-streaming-prefill"],
               OURS_READY, live, LIVE_METRIC),
        System("mlx_vlm_server", "mlx-vlm server (request at speech end)", vlm, UVICORN_READY, chat,
               CHAT_METRIC),
    ]
    return [system for system in systems if system.name in args.systems]


async def run_system(system: System, utterances: list[Utterance], repeats: list[int]) -> dict:
    """One warm-up answer, then the lengths in turn, round after round, so drift spreads over all of them."""
    runs: dict[float, list[dict]] = {u.target_s: [] for u in utterances}
    async with served(system) as url:
        warm_up = await system.measure(url, utterances[0])
        for round_index in range(max(repeats)):
            for utterance, n_runs in zip(utterances, repeats, strict=True):
                if round_index < n_runs:
                    sample = await system.measure(url, utterance)
                    runs[utterance.target_s].append(sample)
                    print(f"{system.name:>22} {utterance.target_s:>4g} s {sample['latency_ms']:8.1f} ms",
                          file=sys.stderr)
    return {"name": system.name, "label": system.label, "command": system.argv, "metric": system.metric,
            "warm_up_latency_ms": warm_up["latency_ms"],
            "lengths": [_summary(u, runs[u.target_s]) for u in utterances]}


def _summary(utterance: Utterance, samples: list[dict]) -> dict:
    latencies_ms = [s["latency_ms"] for s in samples]
    p50_ms, p95_ms = np.percentile(latencies_ms, [50, 95])
    return {"target_s": utterance.target_s, "speech_s": utterance.speech_s, "n": len(samples),
            "p50_ms": float(p50_ms), "p95_ms": float(p95_ms), "samples": samples}


def ratios(systems: list[dict]) -> dict:
    result: dict = {"longest_over_shortest": {
        s["name"]: {q: s["lengths"][-1][f"{q}_ms"] / s["lengths"][0][f"{q}_ms"] for q in ("p50", "p95")}
        for s in systems
    }}
    streaming = next((s for s in systems if s["name"] == "streaming_prefill"), None)
    if streaming:
        result["baseline_p50_over_streaming_p50"] = {
            s["name"]: {f"{b['target_s']:g}": b["p50_ms"] / o["p50_ms"]
                        for o, b in zip(streaming["lengths"], s["lengths"], strict=True)}
            for s in systems if s is not streaming
        }
    return result


def plot(report: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for system, marker in zip(report["systems"], "os^", strict=False):
        p50 = np.array([r["p50_ms"] for r in system["lengths"]])
        p95 = np.array([r["p95_ms"] for r in system["lengths"]])
        ax.errorbar([r["speech_s"] for r in system["lengths"]], p50, yerr=[np.zeros_like(p50), p95 - p50],
                    marker=marker, capsize=4, label=system["label"])
    ax.set(xlabel="utterance length (s of speech)", ylabel="speech_stopped → first delta (ms): p50, bar to p95",
           title=f"Response latency, {report['model']} on {report['device']}", ylim=(0, None))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_table(report: dict) -> None:
    systems, growth = report["systems"], report["ratios"]["longest_over_shortest"]
    header = "".join(f"{r['target_s']:>17g} s" for r in systems[0]["lengths"])
    print(f"{'p50 / p95 ms (n)':>38}{header}{'longest/shortest':>18}")
    for system in systems:
        cells = "".join(f"{r['p50_ms']:>8.0f} /{r['p95_ms']:>6.0f} ({r['n']})" for r in system["lengths"])
        print(f"{system['label']:>38}{cells}{growth[system['name']]['p50']:>17.2f}x")
    for name, by_length in report["ratios"].get("baseline_p50_over_streaming_p50", {}).items():
        print(f"{name + ' / streaming':>38}" + "".join(f"{ratio:>18.2f}x" for ratio in by_length.values()))


def _stdout(*argv: str) -> str:
    return subprocess.run(argv, cwd=REPO_DIR, capture_output=True, text=True).stdout.strip()


def _machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = re.search(r"model name\s*:\s*(.*)", cpuinfo.read_text()) if cpuinfo.exists() else None
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu.group(1) if cpu else platform.processor(), "n_cpus": os.cpu_count(),
            "mlx": mx.__version__, "mlx_vlm": mlx_vlm.__version__,
            "espeak_ng": _stdout("espeak-ng", "--version"),
            "git_commit": _stdout("git", "rev-parse", "HEAD"),
            "git_dirty": bool(_stdout("git", "status", "--porcelain"))}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--model", type=Path, help="a Gemma 4 directory for all three servers (default: the tiny demo model)")
    add("--lengths", type=lambda t: sorted(float(v) for v in t.split(",")), default=[1.0, 3.0, 10.0, 25.0],
        help="utterance lengths, seconds of speech (default 1,3,10,25)")
    add("--repeats", type=lambda t: [int(v) for v in t.split(",")], default=[5, 5, 5, 3],
        help="measured runs per length: one count for all, or one per length (default 5,5,5,3)")
    add("--chunk-ms", type=int, choices=[20, 40], default=40, help="audio per append (default 40, as web/)")
    add("--max-output-tokens", type=int, default=4, help="answer cap, so decoding adds little (default 4)")
    add("--systems", type=lambda t: t.split(","), default=[*SYSTEM_NAMES],
        help=f"which to run, of {','.join(SYSTEM_NAMES)} (default all)")
    args = parser.parse_args()
    if len(args.repeats) == 1:
        args.repeats *= len(args.lengths)
    if len(args.repeats) != len(args.lengths) or min(args.repeats) < 1:
        parser.error("--repeats takes one count, or one per length")
    vad = VadSettings()
    # Gemma 4 hears 30 s per clip: a longer turn would be split in two and measure something else.
    if args.lengths[-1] + (vad.prefix_padding_ms + vad.silence_duration_ms) / 1000 > 29.5:
        parser.error("the longest utterance plus the VAD's padding must stay under Gemma 4's 30 s clip")
    return args


async def run(args: argparse.Namespace) -> dict:
    # SIGTERM unwinds like Ctrl-C, so the servers started here are ended too.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    model_dir = args.model or ensure_demo_model()
    utterances = [make_utterance(length) for length in args.lengths]
    for utterance in utterances:
        check_single_turn(utterance, args.chunk_ms)
    report: dict = {
        "machine": _machine(),
        "model": "demo gemma4 (random weights)" if args.model is None else str(args.model),
        "device": str(mx.default_device()),
        "settings": {
            "chunk_ms": args.chunk_ms, "rate_hz": RATE_HZ, "lead_in_silence_ms": LEAD_IN_MS,
            "max_output_tokens": args.max_output_tokens,
            "turn_detection": "the server's default, as each sample records it",
            "repeats": {f"{length:g}": n for length, n in zip(args.lengths, args.repeats, strict=True)},
            "warm_up": "one answer to the shortest utterance per server, not counted",
            "percentiles": "numpy linear interpolation: with n <= 5 the p95 is close to the largest sample",
        },
        "utterances": [{"target_s": u.target_s, "speech_s": u.speech_s, "words_per_min": u.words_per_min,
                        "text": u.text} for u in utterances],
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    started = time.monotonic()
    systems = build_systems(args, model_dir)
    report["systems"] = [await run_system(system, utterances, args.repeats) for system in systems]
    report["wall_s"] = time.monotonic() - started
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    report["ratios"] = ratios(report["systems"])
    return report


def main() -> None:
    report = asyncio.run(run(parse_args()))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, RESULTS_DIR / "latency.png")
    print_table(report)


if __name__ == "__main__":
    main()
