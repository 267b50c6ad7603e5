"""A conversation many times longer than the context, over the real server and the tiny MLX Gemma 4."""

from __future__ import annotations

import json

import pytest
import websockets.sync.client

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.mlx_backend import MlxBackend
from tests.conftest import serve_in_thread, strict_server_event

pytestmark = pytest.mark.slow

CONTEXT_TOKENS = 640
MAX_OUTPUT_TOKENS = 8
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def host():
    with serve_in_thread(MlxBackend(ensure_demo_model(), context_tokens=CONTEXT_TOKENS)) as address:
        yield address


def connect(host: str, truncation: str):
    ws = websockets.sync.client.connect(f"ws://{host}/v1/realtime", open_timeout=TIMEOUT_S)
    receive_until(ws, "session.created")
    update = {"max_output_tokens": MAX_OUTPUT_TOKENS, "truncation": truncation}
    ws.send(json.dumps({"type": "session.update", "session": update}))
    assert receive_until(ws, "session.updated")[-1]["session"]["truncation"] == truncation
    return ws


def receive_until(ws, event_type: str) -> list[dict]:
    events = []
    while True:
        raw = ws.recv(timeout=TIMEOUT_S)
        strict_server_event(raw)
        events.append(json.loads(raw))
        assert events[-1]["type"] != "error", events[-1]
        if events[-1]["type"] == event_type:
            return events


def ask(ws, n: int) -> dict:
    words = " ".join(f"topic{n % 10} item{n:03d}" for _ in range(3))
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]}
    ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    ws.send(json.dumps({"type": "response.create"}))
    return receive_until(ws, "response.done")[-1]["response"]


def test_many_turns_past_the_context_still_answer_and_keep_the_cache(host):
    with connect(host, "auto") as ws:
        responses = [ask(ws, n) for n in range(40)]
    assert {r["status"] for r in responses} <= {"completed", "incomplete"}
    usage = [r["usage"] for r in responses]
    assert all(u["input_tokens"] + MAX_OUTPUT_TOKENS <= CONTEXT_TOKENS for u in usage)
    # Without truncation the last prompt would hold every turn: several contexts' worth.
    per_round = usage[1]["input_tokens"] - usage[0]["input_tokens"]
    assert per_round * len(usage) > 3 * CONTEXT_TOKENS
    # A window move shows as a prompt that shrank; only then does the engine prefill most of it again.
    moves = [i for i in range(1, len(usage)) if usage[i]["input_tokens"] < usage[i - 1]["input_tokens"]]
    assert 2 <= len(moves) <= len(usage) // 4
    for i in range(1, len(usage)):
        cached = usage[i]["input_token_details"]["cached_tokens"]
        if i not in moves:
            assert cached >= usage[i - 1]["input_tokens"] - 1, (i, usage[i - 1], usage[i])


def test_disabled_truncation_fails_the_overflowing_response_and_the_session_goes_on(host):
    with connect(host, "disabled") as ws:
        responses = [ask(ws, n) for n in range(20)]
        statuses = [r["status"] for r in responses]
        assert "failed" in statuses and statuses[0] != "failed"
        failed = responses[statuses.index("failed")]
        assert f"context holds {CONTEXT_TOKENS}" in failed["status_details"]["error"]["message"]
        ws.send(json.dumps({"type": "session.update", "session": {"truncation": "auto"}}))
        receive_until(ws, "session.updated")
        assert ask(ws, 99)["status"] in ("completed", "incomplete")
