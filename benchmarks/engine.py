"""MLX engine speed: prefill, decode, audio-turn first-token latency, cache reuse and concurrent sessions."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlx.core as mx  # noqa: E402
import mlx_vlm  # noqa: E402
import numpy as np  # noqa: E402
from mlx_vlm.generate import stream_generate  # noqa: E402

from benchmarks.speakers import SPEECH_S, measure_speakers  # noqa: E402
from realtime.engine.cuda_graphs import VARIABLE as CUDA_GRAPHS_VARIABLE  # noqa: E402
from realtime.engine.cuda_graphs import use_cuda_graphs  # noqa: E402
from realtime.engine.demo_model import ensure_demo_model  # noqa: E402
from realtime.engine.gemma4.loading import LoadedModel, load_model  # noqa: E402
from realtime.engine.mlx_backend import MlxBackend  # noqa: E402
from realtime.engine.port import (  # noqa: E402
    ENGINE_SAMPLE_RATE_HZ,
    AudioPart,
    GenerationDone,
    GenerationRequest,
    TextDelta,
    TextPart,
    Turn,
)

RESULTS_DIR = Path(__file__).parent / "results"
REPEATS = 3
# Ours and mlx-vlm alternate this many times; the ratio judged is the median pair's, so a drift of the
# machine's speed (clocks, a neighbour; ±10% from minute to minute on a 2-core box) reaches both alike.
PAIRS = 9
PREFILL_WORDS = 600  # "hello world" pairs: about 1,200 prompt tokens
DECODE_TOKENS = 128
AUDIO_SECONDS = (1, 5, 20)
SESSION_COUNTS = (1, 2, 4, 8)
CONCURRENT_TOKENS = 64
# Each round runs every session count once; a round's ratio moves by ±20% on a 2-core machine.
SESSION_ROUNDS = 5
_ids = itertools.count()


def _request(turns, session_id=None, max_tokens=1, **kwargs) -> GenerationRequest:
    n = next(_ids)
    return GenerationRequest(
        session_id=session_id or f"bench-{n}",
        response_id=f"r{n}",
        output_item_id=f"o{n}",
        instructions="",
        turns=tuple(turns),
        max_output_tokens=max_tokens,
        **kwargs,
    )


def _user(*parts, item_id="u1") -> Turn:
    return Turn("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts), item_id)


def _speech_like(seconds: float) -> np.ndarray:
    # The model is random: any waveform costs the same; this one is not silence, so no path short-cuts it.
    t = np.arange(int(seconds * ENGINE_SAMPLE_RATE_HZ)) / ENGINE_SAMPLE_RATE_HZ
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)


def _ours_ttft_s(backend: MlxBackend, turns) -> tuple[float, GenerationDone]:
    start = time.perf_counter()
    outputs = list(backend.generate(_request(turns), lambda: False))
    return time.perf_counter() - start, outputs[-1]


def _vlm_prompt(loaded: LoadedModel, parts) -> tuple[str, list[np.ndarray]]:
    content = [
        {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "audio"} for p in parts
    ]
    text = loaded.processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return text, [p.samples for p in parts if isinstance(p, AudioPart)]


def _vlm_token_times(loaded: LoadedModel, parts, max_tokens: int) -> tuple[float, list[float]]:
    text, audio = _vlm_prompt(loaded, parts)
    loaded.processor.tokenizer.stopping_criteria.reset(loaded.model.config.eos_token_id)
    start = time.perf_counter()
    times = [
        time.perf_counter()
        for _ in stream_generate(
            loaded.model, loaded.processor, text, audio=audio or None, max_tokens=max_tokens, temperature=0.0
        )
    ]
    # stream_generate repeats its last token in a closing result.
    return start, times[:max_tokens]


def _best(measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(REPEATS))


def _ratios(rates: Sequence[float], baselines: Sequence[float]) -> list[float]:
    return [rate / baseline for rate, baseline in zip(rates, baselines, strict=True)]


def _paired(ours: Callable[[], float], mlx_vlm: Callable[[], float]) -> dict:
    """Two rates measured in turns, PAIRS times: the medians, and the median of the pairs' ratios."""
    pairs = [(ours(), mlx_vlm()) for _ in range(PAIRS)]
    ours_rates, vlm_rates = zip(*pairs, strict=True)
    ratios = _ratios(ours_rates, vlm_rates)
    return {
        "ours_tokens_per_s": statistics.median(ours_rates),
        "mlx_vlm_tokens_per_s": statistics.median(vlm_rates),
        "ours_over_mlx_vlm": statistics.median(ratios),
        "ratio_per_pair": ratios,
    }


def measure_prefill(backend: MlxBackend, loaded: LoadedModel) -> dict:
    parts = [TextPart(" ".join(["hello world"] * PREFILL_WORDS))]
    _, done = _ours_ttft_s(backend, [_user(*parts)])
    n_tokens = done.usage.input_tokens

    def ours() -> float:
        return n_tokens / _ours_ttft_s(backend, [_user(*parts)])[0]

    def vlm() -> float:
        start, times = _vlm_token_times(loaded, parts, 1)
        return n_tokens / (times[0] - start)

    return {"prompt_tokens": n_tokens, **_paired(ours, vlm)}


def _decode_rate(start_and_times: tuple[float, list[float]]) -> float:
    _, times = start_and_times
    return (len(times) - 1) / (times[-1] - times[0])


@dataclass(frozen=True)
class _SessionsRun:
    wall_s: float
    n_tokens: int
    # Each session's answer-token times, in order.
    token_times: list[list[float]]

    def steady_rate(self) -> float:
        """Tokens per second over the stretch when every session was decoding: from the last session's
        first answer token to the first session's last one, so no prompt prefill is inside it."""
        start = max(times[0] for times in self.token_times)
        end = min(times[-1] for times in self.token_times)
        inside = sum(start < t <= end for times in self.token_times for t in times)
        return inside / (end - start)

    def with_prompts_rate(self) -> float:
        """Tokens per second over the whole run, the prompts' prefill and the batch's forming included."""
        return self.n_tokens / self.wall_s


def _run_sessions(backend: MlxBackend, requests: list[GenerationRequest]) -> _SessionsRun:
    """The requests answered at once, their prompts' prefill included."""
    start = time.perf_counter()
    steps = {i: backend.generate(r, lambda: False) for i, r in enumerate(requests)}
    yields: dict[int, list[float]] = {i: [] for i in steps}
    token_times = [[] for _ in requests]
    n_tokens = 0
    # As the engine worker steps: one unit of every session, then the step's batched work.
    while steps:
        for i, step in list(steps.items()):
            output = next(step)
            if isinstance(output, GenerationDone):
                n = output.usage.output_tokens
                n_tokens += n
                # One yield per answer token before GenerationDone; the prompt's chunks yielded before them.
                token_times[i] = yields[i][len(yields[i]) - n :]
                del steps[i]
            else:
                yields[i].append(time.perf_counter())
        backend.finish_step()
    return _SessionsRun(time.perf_counter() - start, n_tokens, token_times)


def measure_decode(backend: MlxBackend, loaded: LoadedModel) -> dict:
    parts = [TextPart("hello")]

    def ours() -> float:
        return _run_sessions(backend, [_request([_user(*parts)], max_tokens=DECODE_TOKENS)]).steady_rate()

    def vlm() -> float:
        return _decode_rate(_vlm_token_times(loaded, parts, DECODE_TOKENS))

    return {"tokens": DECODE_TOKENS, **_paired(ours, vlm)}


def measure_audio_ttft(backend: MlxBackend, loaded: LoadedModel) -> list[dict]:
    rows = []
    for seconds in AUDIO_SECONDS:
        parts = [AudioPart(_speech_like(seconds), f"clip-{seconds}"), TextPart("what did you hear")]
        ours_s = _best(lambda parts=parts: _ours_ttft_s(backend, [_user(*parts)])[0])

        def vlm_s(parts=parts) -> float:
            start, times = _vlm_token_times(loaded, parts, 1)
            return times[0] - start

        baseline_s = _best(vlm_s)
        rows.append(
            {
                "audio_s": seconds,
                "audio_tokens": seconds * 25,
                "ours_ms": ours_s * 1000,
                "mlx_vlm_ms": baseline_s * 1000,
                "ours_over_mlx_vlm": baseline_s / ours_s,
            }
        )
    return rows


def measure_cache(backend: MlxBackend) -> dict:
    """Turn 2 of a voice conversation (20 s of audio, a 32-token answer, then a question), cached vs cold."""

    def turn_two_s(cold: bool) -> tuple[float, GenerationDone]:
        session = f"cache-{next(_ids)}"
        first = [_user(AudioPart(_speech_like(20), "turn-1"), "what did you hear")]
        opening = _request(first, session_id=session, max_tokens=32)
        said = "".join(o.text for o in backend.generate(opening, lambda: False) if isinstance(o, TextDelta))
        if cold:
            # A fresh session holds nothing: the same conversation is prefilled from the start.
            backend.drop_session(session)
            session = f"cache-{next(_ids)}"
        turns = [
            *first,
            Turn("assistant", (TextPart(said),), opening.output_item_id),
            _user("tell me more", item_id="u2"),
        ]
        start = time.perf_counter()
        outputs = list(backend.generate(_request(turns, session_id=session), lambda: False))
        elapsed = time.perf_counter() - start
        backend.drop_session(session)
        return elapsed, outputs[-1]

    hit_s, hit_done = min((turn_two_s(cold=False) for _ in range(REPEATS)), key=lambda r: r[0])
    cold_s, _ = min((turn_two_s(cold=True) for _ in range(REPEATS)), key=lambda r: r[0])
    usage = hit_done.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "hit_ms": hit_s * 1000,
        "cold_ms": cold_s * 1000,
        "cold_over_hit": cold_s / hit_s,
    }


def measure_sessions(backend: MlxBackend) -> list[dict]:
    """Aggregate decode while every session decodes, and the whole run's rate with the prompts' prefill
    and the batch's forming included: medians over SESSION_ROUNDS rounds, each ratio the median of the
    rounds' own (a count's run over the one-session run of the same round)."""
    # Round-robin over the session counts, so a slow minute of the machine reaches every count alike.
    runs_by_count: dict[int, list[_SessionsRun]] = {n: [] for n in SESSION_COUNTS}
    for _ in range(SESSION_ROUNDS):
        for n_sessions, runs in runs_by_count.items():
            prompts = [f"hello number {i}" for i in range(n_sessions)]
            requests = [_request([_user(prompt)], max_tokens=CONCURRENT_TOKENS) for prompt in prompts]
            runs.append(_run_sessions(backend, requests))
    alone = runs_by_count[SESSION_COUNTS[0]]
    alone_steady = [run.steady_rate() for run in alone]
    alone_with_prompts = [run.with_prompts_rate() for run in alone]
    rows = []
    for n_sessions, runs in runs_by_count.items():
        steady = [run.steady_rate() for run in runs]
        with_prompts = [run.with_prompts_rate() for run in runs]
        per_round = _ratios(steady, alone_steady)
        rows.append(
            {
                "sessions": n_sessions,
                "tokens": runs[0].n_tokens,
                "aggregate_tokens_per_s": statistics.median(steady),
                "per_session_tokens_per_s": statistics.median(steady) / n_sessions,
                "aggregate_over_one_session": statistics.median(per_round),
                "over_one_session_per_round": per_round,
                "with_prompts_tokens_per_s": statistics.median(with_prompts),
                "with_prompts_over_one_session": statistics.median(_ratios(with_prompts, alone_with_prompts)),
            }
        )
    return rows


def plot(results: dict, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    rates = axes[0][0]
    labels = ["prefill", "decode"]
    x = np.arange(2)
    for offset, who in ((-0.2, "ours"), (0.2, "mlx_vlm")):
        rates.bar(
            x + offset,
            [results["prefill"][f"{who}_tokens_per_s"], results["decode"][f"{who}_tokens_per_s"]],
            0.4,
            label=who.replace("_", "-"),
        )
    rates.set(xticks=x, xticklabels=labels, ylabel="tokens/s", yscale="log", title="Prefill and decode")
    rates.legend()
    ttft = axes[0][1]
    audio = results["audio_ttft"]
    ttft.plot([r["audio_s"] for r in audio], [r["ours_ms"] for r in audio], "o-", label="ours")
    ttft.plot([r["audio_s"] for r in audio], [r["mlx_vlm_ms"] for r in audio], "s--", label="mlx-vlm")
    ttft.set(xlabel="audio turn (s)", ylabel="time to first token (ms)", title="Audio turn, cold")
    ttft.legend()
    cache = results["cache"]
    axes[1][0].bar(["cold", "cache hit"], [cache["cold_ms"], cache["hit_ms"]], color=["grey", "tab:green"])
    axes[1][0].set(
        ylabel="turn-2 time to first token (ms)",
        title=f"Turn 2: {cache['cached_tokens']}/{cache['prompt_tokens']} tokens cached",
    )
    sessions = results["sessions"]
    axes[1][1].plot(
        [r["sessions"] for r in sessions],
        [r["aggregate_tokens_per_s"] for r in sessions],
        "o-",
        label="aggregate",
    )
    axes[1][1].plot(
        [r["sessions"] for r in sessions],
        [r["per_session_tokens_per_s"] for r in sessions],
        "s--",
        label="per session",
    )
    axes[1][1].plot(
        [r["sessions"] for r in sessions],
        [r["with_prompts_tokens_per_s"] for r in sessions],
        "^:",
        label="aggregate, prompts included",
    )
    axes[1][1].set(
        xlabel="concurrent sessions (batched decode)",
        ylabel="decode tokens/s",
        title=(
            f"Concurrent sessions; {results['speakers']['speakers']} speaking: "
            f"{results['speakers']['engine_s_per_speech_s_per_speaker']:.3f} s/s each, "
            f"a 9th answers at {results['speakers']['listener_tokens_per_s']:.1f} tok/s"
        ),
    )
    axes[1][1].set_xscale("log", base=2)
    axes[1][1].set_xticks(SESSION_COUNTS, [str(n) for n in SESSION_COUNTS])
    axes[1][1].legend()
    fig.suptitle(f"mlx-realtime engine on {results['model']} ({results['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="a Gemma 4 directory (default: the tiny demo model)")
    parser.add_argument(
        "--cuda-graphs",
        choices=("on", "off"),
        help="MLX's CUDA graphs for both systems (default: the server's choice, off unless the "
        "environment sets MLX_USE_CUDA_GRAPHS)",
    )
    args = parser.parse_args()
    use_cuda_graphs(None if args.cuda_graphs is None else args.cuda_graphs == "on")
    # Decode rates need answers that run to the token cap; the default demo model ends its turns.
    path = args.model or ensure_demo_model(ends_turns=False)
    loaded = load_model(path, is_demo=args.model is None)
    backend = MlxBackend(loaded)
    load_start = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - load_start
    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "versions": {"mlx": mx.__version__, "mlx_vlm": mlx_vlm.__version__},
        "model": "demo gemma4 (random weights)" if args.model is None else str(path),
        "device": mx.default_device().type.name,
        "cuda_graphs": os.environ[CUDA_GRAPHS_VARIABLE] != "0",
        "n_cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "timer": (
            f"prefill and decode: medians of {PAIRS} alternated pairs; concurrent sessions: medians of "
            f"{SESSION_ROUNDS} rounds; otherwise best of {REPEATS}; wall time (time.perf_counter) on the "
            "calling thread"
        ),
        "warm_up_s": load_s,
        "prefill": measure_prefill(backend, loaded),
        "decode": measure_decode(backend, loaded),
        "audio_ttft": measure_audio_ttft(backend, loaded),
        "cache": measure_cache(backend),
        "sessions": measure_sessions(backend),
        "speakers": measure_speakers(backend, _speech_like(SPEECH_S)),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "engine.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS_DIR / "engine.png")
    print(
        json.dumps(
            {k: results[k] for k in ("prefill", "decode", "audio_ttft", "cache", "sessions", "speakers")},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
