"""Tool calls: what constrained decoding costs per token, and what building a call grammar costs."""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.gemma4.loading import load_model
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import GenerationDone, GenerationRequest, NamedTool, TextPart, ToolSpec, Turn

RESULTS_DIR = Path(__file__).parent / "results"
REPEATS = 3
DECODE_TOKENS = 64
# One long string argument, so a constrained answer runs DECODE_TOKENS tokens like a free one.
NOTE = ToolSpec(
    "take_note",
    "Write a note.",
    {"type": "object", "properties": {"text": {"type": "string", "maxLength": 2000}}, "required": ["text"]},
)
_ids = itertools.count()


def _request(tool_choice, tools=(NOTE,)) -> GenerationRequest:
    n = next(_ids)
    return GenerationRequest(
        session_id=f"bench-{n}",
        response_id=f"r{n}",
        output_item_id=f"o{n}",
        instructions="",
        turns=(Turn("user", (TextPart("Write a long note about the weather."),), "u1"),),
        max_output_tokens=DECODE_TOKENS,
        tools=tools,
        tool_choice=tool_choice,
    )


def _answer_s(backend: MlxBackend, request: GenerationRequest) -> tuple[float, int]:
    """Wall seconds for the whole answer, and its output tokens."""
    start = time.perf_counter()
    outputs = list(backend.generate(request, lambda: False))
    total_s = time.perf_counter() - start
    done = outputs[-1]
    assert isinstance(done, GenerationDone) and done.stop_reason != "error", done
    return total_s, done.usage.output_tokens


def decode_ms_per_token(backend: MlxBackend, tool_choice, tools=(NOTE,)) -> float:
    """Median over repeats of (answer time − one-token answer time) / extra tokens: prefill cancels out."""
    samples = []
    for _ in range(REPEATS):
        one_s, _ = _answer_s(backend, replace(_request(tool_choice, tools), max_output_tokens=1))
        total_s, n_tokens = _answer_s(backend, _request(tool_choice, tools))
        samples.append((total_s - one_s) * 1000 / max(1, n_tokens - 1))
    return sorted(samples)[len(samples) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the demo model)")
    args = parser.parse_args()
    backend = MlxBackend(load_model(args.model or ensure_demo_model(), is_demo=args.model is None))
    backend.load()
    start = time.perf_counter()
    for _ in range(REPEATS):
        backend._tool_constraint(_request(NamedTool("take_note")))
    grammar_ms = (time.perf_counter() - start) * 1000 / REPEATS
    results = {
        "platform": platform.platform(),
        "model": "demo gemma4 (random weights)" if args.model is None else str(args.model),
        "decode_tokens": DECODE_TOKENS,
        "ms_per_token": {
            "no tools": decode_ms_per_token(backend, "auto", tools=()),
            "tools, auto": decode_ms_per_token(backend, "auto"),
            "tools, named (constrained)": decode_ms_per_token(backend, NamedTool("take_note")),
        },
        # Per constrained request: the lark grammar from the schemas, compiled into a matcher.
        "grammar_build_ms": grammar_ms,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "tools.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
