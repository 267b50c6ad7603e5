"""What input transcription costs: engine time per turn, and the answer's first delta with it off and on.

Each spoken turn is played in real time, in 40 ms appends, into a Session driving the local engine (the
server's path without its socket). Turns alternate between transcription off and on, so both modes see
the same machine load. Run: python -m benchmarks.transcription [--model DIR]. A machine without
espeak-ng takes speech made elsewhere: `--save-speech FILE` here, `--speech FILE` there.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from benchmarks.latency import LEAD_IN_MS, RATE_HZ, Utterance, _machine, make_utterance, plt
from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import TranscriptionRequest
from realtime.engine.worker import EngineWorker
from realtime.protocol.codec import encode_server_event
from realtime.session.session import Session
from realtime.session.settings import SessionSettings, Transcription

RESULTS_DIR = Path(__file__).parent / "results"
CHUNK_MS = 40
TRAILING_SILENCE_MS = 1500
TURN_TIMEOUT_S = 300


class TimedBackend(MlxBackend):
    """Counts the engine thread's time inside each transcription's steps: the engine time it costs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.transcription_s: dict[str, float] = {}

    def transcribe(self, request: TranscriptionRequest, should_stop) -> Iterator:
        steps = super().transcribe(request, should_stop)
        spent = 0.0
        while True:
            started = time.perf_counter()
            try:
                step = next(steps)
            except StopIteration:
                break
            finally:
                spent += time.perf_counter() - started
                self.transcription_s[request.request_id] = spent
            yield step


@dataclass
class Turn:
    marks: dict[str, float] = field(default_factory=dict)
    transcript: str | None = None
    transcription_tokens: int = 0


def play_turn(worker: EngineWorker, utterance: Utterance, transcribe: bool, max_tokens: int) -> Turn:
    settings = SessionSettings(
        max_output_tokens=max_tokens, transcription=Transcription(language="en") if transcribe else None
    )
    session = Session(f"bench-{time.monotonic_ns()}", settings)
    outputs: queue.SimpleQueue = queue.SimpleQueue()
    turn = Turn()
    silence = np.zeros(RATE_HZ * LEAD_IN_MS // 1000, np.int16)
    tail = np.zeros(RATE_HZ * TRAILING_SILENCE_MS // 1000, np.int16)
    audio = np.concatenate([silence, utterance.speech, tail])
    chunk = RATE_HZ * CHUNK_MS // 1000
    started = time.perf_counter()
    for n, offset in enumerate(range(0, len(audio), chunk)):
        # The microphone's clock: each append leaves when its audio would have been spoken.
        time.sleep(max(0.0, started + n * CHUNK_MS / 1000 - time.perf_counter()))
        message = {"type": "input_audio_buffer.append", "audio": _b64(audio[offset : offset + chunk])}
        session.receive_message(json.dumps(message))
        _pump(session, worker, outputs, turn, block=False)
    deadline = time.perf_counter() + TURN_TIMEOUT_S
    while not _finished(turn, transcribe):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"turn not finished: {sorted(turn.marks)}")
        _pump(session, worker, outputs, turn, block=True)
    session.close()
    _pump(session, worker, outputs, turn, block=False)
    return turn


def _finished(turn: Turn, transcribe: bool) -> bool:
    return "response.done" in turn.marks and (not transcribe or "transcription_end" in turn.marks)


def _pump(session: Session, worker: EngineWorker, outputs, turn: Turn, *, block: bool) -> None:
    try:
        while True:
            session.receive_engine_output(outputs.get(block=block, timeout=TURN_TIMEOUT_S))
            block = False
    except queue.Empty:
        pass
    events, commands = session.drain()
    now = time.perf_counter()
    for event in events:
        wire = json.loads(encode_server_event(event))
        kind = wire["type"]
        turn.marks.setdefault(kind, now)
        if kind.endswith("input_audio_transcription.completed"):
            turn.marks["transcription_end"] = now
            turn.transcript = wire["transcript"]
            turn.transcription_tokens = wire["usage"]["output_tokens"]
        elif kind.endswith("input_audio_transcription.failed"):
            turn.marks["transcription_end"] = now
    for command in commands:
        worker.send(command, outputs.put)


def _b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


def utterances(args: argparse.Namespace) -> list[Utterance]:
    if args.speech is None:
        return [make_utterance(target_s) for target_s in args.lengths]
    saved = np.load(args.speech)
    texts = json.loads(str(saved["texts"]))
    return [
        Utterance(float(t), texts[i], int(saved["wpm"][i]), saved[f"speech{i}"])
        for i, t in enumerate(saved["lengths"])
    ]


def save_speech(path: Path, made: list[Utterance]) -> None:
    speech = {f"speech{i}": u.speech for i, u in enumerate(made)}
    np.savez(
        path,
        lengths=[u.target_s for u in made],
        wpm=[u.words_per_min for u in made],
        texts=json.dumps([u.text for u in made]),
        **speech,
    )


def measure(args: argparse.Namespace) -> dict:
    backend = TimedBackend(args.model or ensure_demo_model())
    worker = EngineWorker(backend)
    worker.start(timeout_s=600)
    rows = []
    try:
        for utterance in utterances(args):
            play_turn(worker, utterance, True, args.max_output_tokens)  # warm-up, not counted
            samples: dict[str, list] = {"off": [], "on": []}
            for _ in range(args.repeats):
                for mode in ("off", "on"):
                    before = dict(backend.transcription_s)
                    turn = play_turn(worker, utterance, mode == "on", args.max_output_tokens)
                    engine_s = sum(v for k, v in backend.transcription_s.items() if k not in before)
                    samples[mode].append((turn, engine_s))
            rows.append(_summary(utterance, samples))
    finally:
        worker.stop()
    return {"lengths": rows}


def _summary(utterance: Utterance, samples: dict[str, list]) -> dict:
    def first_delta_ms(turn: Turn) -> float:
        stopped = turn.marks["input_audio_buffer.speech_stopped"]
        return 1000 * (turn.marks["response.output_text.delta"] - stopped)

    latency = {mode: [first_delta_ms(t) for t, _ in runs] for mode, runs in samples.items()}
    engine_s = [s for _, s in samples["on"]]
    p50 = {mode: float(np.median(values)) for mode, values in latency.items()}
    return {
        "speech_s": utterance.speech_s,
        "first_delta_ms": latency,
        "first_delta_p50_ms": p50,
        "first_delta_on_over_off": p50["on"] / p50["off"],
        "transcription_engine_s": engine_s,
        "transcription_engine_s_p50": float(np.median(engine_s)),
        "transcription_engine_s_per_speech_s": float(np.median(engine_s)) / utterance.speech_s,
        "transcription_tokens": [t.transcription_tokens for t, _ in samples["on"]],
        "transcript_example": samples["on"][0][0].transcript,
    }


def plot(report: dict, path: Path) -> None:
    rows = report["lengths"]
    x = np.arange(len(rows))
    fig, (latency, cost) = plt.subplots(1, 2, figsize=(10, 4.5))
    for offset, mode in ((-0.2, "off"), (0.2, "on")):
        latency.bar(
            x + offset, [r["first_delta_p50_ms"][mode] for r in rows], 0.4, label=f"transcription {mode}"
        )
    latency.set(ylabel="speech_stopped → first delta, p50 (ms)", title="Answer latency")
    latency.legend()
    cost.bar(x, [r["transcription_engine_s_p50"] for r in rows], 0.5)
    cost.set(ylabel="engine time per turn, p50 (s)", title="Transcription cost")
    for axis in (latency, cost):
        axis.set_xticks(x, [f"{r['speech_s']:.1f} s speech" for r in rows])
        axis.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Input transcription by the loaded model: {report['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_table(report: dict) -> None:
    print(f"{'speech s':>9} {'first delta p50 off / on ms':>29} {'on/off':>7} {'transcription engine s':>23}")
    for row in report["lengths"]:
        p50 = row["first_delta_p50_ms"]
        print(
            f"{row['speech_s']:>9.1f} {p50['off']:>14.0f} / {p50['on']:<12.0f} "
            f"{row['first_delta_on_over_off']:>7.2f} {row['transcription_engine_s_p50']:>14.2f} "
            f"({row['transcription_engine_s_per_speech_s']:.2f} per s)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--model", type=Path, help="a Gemma 4 directory (default: the tiny demo model)")
    add(
        "--lengths",
        type=lambda t: [float(v) for v in t.split(",")],
        default=[2.0, 6.0],
        help="utterance lengths, seconds of speech (default 2,6)",
    )
    add("--repeats", type=int, default=3, help="measured turns per length and mode (default 3)")
    add("--max-output-tokens", type=int, default=16, help="answer cap (default 16)")
    add("--speech", type=Path, help="utterances saved with --save-speech, instead of espeak-ng")
    add("--save-speech", type=Path, help="make the utterances, save them to this .npz and stop")
    add("--tag", default="", help="suffix for the result files, e.g. h200-e2b")
    return parser.parse_args()


def machine() -> dict:
    try:
        return _machine()
    except FileNotFoundError:  # no espeak-ng there: the speech came from elsewhere
        return {"platform": platform.platform(), "n_cpus": os.cpu_count(), "mlx": mx.__version__}


def main() -> None:
    args = parse_args()
    if args.save_speech:
        save_speech(args.save_speech, [make_utterance(target_s) for target_s in args.lengths])
        return
    started = time.monotonic()
    report = {
        "machine": machine(),
        "device": str(mx.default_device()),
        "model": "demo gemma4 (random weights)" if args.model is None else str(args.model),
        "settings": {
            "chunk_ms": CHUNK_MS,
            "repeats": args.repeats,
            "max_output_tokens": args.max_output_tokens,
            "turn_detection": "server_vad defaults",
            "transcription": {"language": "en"},
        },
        "load_average_1min_at_start": os.getloadavg()[0],
        **measure(args),
    }
    report["wall_s"] = time.monotonic() - started
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    RESULTS_DIR.mkdir(exist_ok=True)
    name = f"transcription-{args.tag}" if args.tag else "transcription"
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, RESULTS_DIR / f"{name}.png")
    print_table(report)


if __name__ == "__main__":
    main()
