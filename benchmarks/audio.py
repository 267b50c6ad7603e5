"""Input-audio cost per 20 ms chunk: decode, resample to 16 kHz and VAD, for each session format."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soxr  # noqa: E402

from realtime.audio.formats import AudioDecoder, AudioFormat, encode_samples  # noqa: E402
from realtime.audio.ingest import AudioIngest  # noqa: E402
from realtime.audio.resample import SOXR_QUALITY  # noqa: E402
from realtime.audio.segmenter import Segmenter, VadSettings  # noqa: E402
from realtime.audio.vad import WebRtcVadDetector  # noqa: E402
from tests.audio.speech import SENTENCES, SpeechClip, render_timeline, synthesize  # noqa: E402

RESULTS_DIR = Path(__file__).parent / "results"
FORMATS = [
    AudioFormat("audio/pcm", 24000),
    AudioFormat("audio/pcm", 16000),
    AudioFormat("audio/pcm", 48000),
    AudioFormat("audio/pcm", 44100),
    AudioFormat("audio/pcmu", 8000),
    AudioFormat("audio/pcma", 8000),
]
N_TIMELINE_REPEATS = 4  # about 64 s of audio
CHUNK_MS = 20
REPEATS = 7


def _speech(clips: list[SpeechClip], rate_hz: int) -> np.ndarray:
    """The tests' espeak-ng timeline (four sentences, 1-1.6 s pauses, noise 20 dB down), repeated."""
    timeline = render_timeline(clips, rate_hz, snr_db=20.0, seed=0)
    return np.tile(timeline.samples, N_TIMELINE_REPEATS)


def _us_per_chunk(run: Callable[[], None], n_chunks: int) -> dict[str, float]:
    """Best of REPEATS, per chunk: process CPU time (what a stream costs) and wall time."""
    cpu_us, wall_us = [], []
    for _ in range(REPEATS):
        cpu_start, wall_start = time.process_time_ns(), time.perf_counter_ns()
        run()
        cpu_us.append((time.process_time_ns() - cpu_start) / 1000 / n_chunks)
        wall_us.append((time.perf_counter_ns() - wall_start) / 1000 / n_chunks)
    return {"cpu": min(cpu_us), "wall": min(wall_us)}


def _chunks(data: bytes, fmt: AudioFormat) -> list[bytes]:
    n_bytes = fmt.rate_hz * CHUNK_MS // 1000 * fmt.n_bytes_per_sample
    return [data[i : i + n_bytes] for i in range(0, len(data), n_bytes)]


def _vad_only(samples_16k: np.ndarray) -> Callable[[], None]:
    frame_n_samples = WebRtcVadDetector(2).frame_n_samples
    n_whole = len(samples_16k) - frame_n_samples + 1
    frames = [samples_16k[i : i + frame_n_samples] for i in range(0, n_whole, frame_n_samples)]

    def vad_only() -> None:
        detector = WebRtcVadDetector(2)
        for frame in frames:
            detector.is_speech(frame)

    return vad_only


def measure_format(fmt: AudioFormat, clips: list[SpeechClip]) -> dict:
    chunks = _chunks(encode_samples(_speech(clips, fmt.rate_hz), fmt), fmt)
    ingest = AudioIngest(fmt)
    samples_16k = np.concatenate([ingest.push(chunk) for chunk in chunks] + [ingest.flush()])
    n_turns = []

    def numpy_copy() -> None:
        for chunk in chunks:
            np.frombuffer(chunk, dtype=np.uint8).copy()

    def decode() -> None:
        decoder = AudioDecoder(fmt)
        for chunk in chunks:
            decoder.decode(chunk)

    def decode_resample() -> None:
        ingest = AudioIngest(fmt)
        for chunk in chunks:
            ingest.push(chunk)

    def full() -> None:
        ingest = AudioIngest(fmt)
        segmenter = Segmenter(VadSettings(), WebRtcVadDetector(2))
        n_events = sum(len(segmenter.push(ingest.push(chunk))) for chunk in chunks)
        n_turns.append(n_events // 2)

    stages = {
        "numpy_copy": numpy_copy,
        "decode": decode,
        "decode_resample": decode_resample,
        "vad_only": _vad_only(samples_16k),
        "decode_resample_vad": full,
    }
    timings = {name: _us_per_chunk(run, len(chunks)) for name, run in stages.items()}
    cpu_us = {name: t["cpu"] for name, t in timings.items()}
    realtime_factor = CHUNK_MS * 1000 / cpu_us["decode_resample_vad"]
    return {
        "format": fmt.to_session(),
        "audio_s": len(chunks) * CHUNK_MS / 1000,
        "cpu_us_per_20ms": cpu_us,
        "wall_us_per_20ms": {name: t["wall"] for name, t in timings.items()},
        "realtime_factor": realtime_factor,
        "streams_per_core": int(realtime_factor),
        "full_over_vad_only": cpu_us["decode_resample_vad"] / cpu_us["vad_only"],
        "decode_over_numpy_copy": cpu_us["decode"] / cpu_us["numpy_copy"],
        "turns_found": n_turns[0],
    }


def _label(fmt: dict) -> str:
    kind = fmt["type"].removeprefix("audio/")
    return f"{kind} {fmt['rate'] / 1000:g}k" if "rate" in fmt else kind


def plot(results: list[dict], path: Path) -> None:
    stages = {
        "vad_only": "VAD only (baseline)",
        "decode": "decode",
        "decode_resample": "decode + resample",
        "decode_resample_vad": "decode + resample + VAD",
    }
    labels = [_label(r["format"]) for r in results]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (stage, stage_label) in enumerate(stages.items()):
        values = [r["cpu_us_per_20ms"][stage] for r in results]
        ax.bar(x + (i - 1.5) * 0.2, values, 0.2, label=stage_label)
    ax.set_xticks(x, labels)
    ax.set_ylabel("CPU µs per 20 ms of audio (lower is better)")
    ax.set_title("Input audio pipeline cost per chunk, one core")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    clips = [synthesize(text) for text in SENTENCES]
    results = [measure_format(fmt, clips) for fmt in FORMATS]
    report = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "versions": {"numpy": np.__version__, "soxr": soxr.__version__, "soxr_quality": SOXR_QUALITY},
        "chunk_ms": CHUNK_MS,
        "repeats": REPEATS,
        "timer": "best of repeats; cpu = time.process_time_ns (one thread), wall = perf_counter_ns",
        "load_average_1min": os.getloadavg()[0],
        "n_cpus": os.cpu_count(),
        "results": results,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "audio.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, RESULTS_DIR / "audio.png")
    print(f"{'format':>9}  {'µs/20ms':>8} {'decode':>7} {'+resamp':>7} {'vad':>5}  RT factor  vs vad")
    for r in results:
        us = r["cpu_us_per_20ms"]
        print(
            f"{_label(r['format']):>9}  {us['decode_resample_vad']:8.1f} {us['decode']:7.1f} "
            f"{us['decode_resample']:7.1f} {us['vad_only']:5.1f}  {r['realtime_factor']:9.0f}  "
            f"{r['full_over_vad_only']:5.1f}x"
        )


if __name__ == "__main__":
    main()
