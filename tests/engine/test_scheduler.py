"""Batched decoding on the real tiny model: each session's answer is the one it gets alone."""

from __future__ import annotations

import queue

import pytest

from realtime.engine import row_streams
from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.gemma4.loading import load_model
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import (
    CancelGeneration,
    GenerationDone,
    GenerationRequest,
    StartGeneration,
    TextDelta,
    TextPart,
    Turn,
)
from realtime.engine.worker import EngineWorker
from tests.engine import backend_state as state

pytestmark = pytest.mark.slow

TIMEOUT_S = 300
# Prompts of different lengths, one past the demo model's 128-token sliding window.
QUESTIONS = {
    "short": "hi",
    "medium": "tell me about the weather in the mountains today " * 3,
    "long": "a long story about a cat, a dog and a very patient tortoise " * 12,
    "other": "what is seven times eight",
}


class CountingBackend(MlxBackend):
    """Records how many answers each engine step decoded together, and what their own caches held."""

    def __init__(self, loaded) -> None:
        super().__init__(loaded)
        self.batch_sizes: list[int] = []
        # KV layers the batched rows' own caches still hold after each step: the batch has their KV.
        self.own_layers_while_batched: list[int] = []

    def finish_step(self) -> None:
        super().finish_step()
        self.batch_sizes.append(self._scheduler.n_batched)
        self.own_layers_while_batched.append(sum(len(row.layers) for row in self._scheduler._rows))


@pytest.fixture(scope="module")
def loaded():
    return load_model(ensure_demo_model())


def request(session_id: str, text: str, *, turns=(), max_tokens: int = 24, n: int = 1) -> GenerationRequest:
    turn = Turn("user", (TextPart(text),), f"{session_id}-u{n}")
    return GenerationRequest(
        session_id, f"{session_id}-r{n}", f"{session_id}-a{n}", "", (*turns, turn), max_tokens
    )


def alone(backend: MlxBackend, req: GenerationRequest) -> tuple[list[int], GenerationDone]:
    outputs = list(backend.generate(req, lambda: False))
    return list(state.reply(backend, req.session_id, req.output_item_id).token_ids), outputs[-1]


def run_together(worker: EngineWorker, requests: list[GenerationRequest], cancel: str | None = None):
    """Sends every request at once; returns each one's outputs."""
    done: queue.SimpleQueue[str] = queue.SimpleQueue()
    outputs: dict[str, list] = {r.response_id: [] for r in requests}

    def sink(output) -> None:
        outputs[output.response_id].append(output)
        if cancel == output.response_id and isinstance(output, TextDelta) and len(outputs[cancel]) == 3:
            worker.send(CancelGeneration(cancel), sink)
        if isinstance(output, GenerationDone):
            done.put(output.response_id)

    for req in requests:
        worker.send(StartGeneration(req), sink)
    for _ in requests:
        done.get(timeout=TIMEOUT_S)
    return outputs


@pytest.fixture(scope="module")
def batched():
    # Loaded on the engine thread itself: MLX streams are thread-local. Three usable cores, whatever this
    # machine has: the four questions' output heads and sampling then run on three CPU streams in groups
    # of uneven size.
    backend = CountingBackend(ensure_demo_model())
    worker = EngineWorker(backend)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(row_streams, "_usable_cores", lambda: 3)
        worker.start(timeout_s=TIMEOUT_S)
    assert len(backend._scheduler._row_streams) == 3
    yield backend, worker
    worker.stop()


def test_greedy_answers_decoded_together_equal_each_answer_alone(loaded, batched):
    # bf16 demo weights: row results do not depend on the batch's shape here, so no float32 variant.
    reference = MlxBackend(loaded)
    reference.load()
    expected = {name: alone(reference, request(name, text)) for name, text in QUESTIONS.items()}
    backend, worker = batched
    backend.batch_sizes.clear()
    outputs = run_together(worker, [request(name, text) for name, text in QUESTIONS.items()])
    assert max(backend.batch_sizes) == len(QUESTIONS)
    # Each session's KV is held once while it is batched.
    assert max(backend.own_layers_while_batched) == 0
    for name in QUESTIONS:
        tokens, done = expected[name]
        assert state.reply(backend, name, f"{name}-a1").token_ids == tuple(tokens)
        got = outputs[f"{name}-r1"]
        assert got[-1].stop_reason == done.stop_reason and got[-1].usage == done.usage
        text = "".join(o.text for o in got if isinstance(o, TextDelta))
        assert text == state.reply(reference, name, f"{name}-a1").text


def test_caches_come_back_out_of_the_batch_for_the_next_turn(loaded, batched):
    backend, worker = batched
    first = {name: request(name + "-2", text) for name, text in QUESTIONS.items()}
    run_together(worker, list(first.values()))
    follow_ups = []
    for req in first.values():
        said = state.reply(backend, req.session_id, req.output_item_id).text
        history = (*req.turns, Turn("assistant", (TextPart(said),), req.output_item_id))
        follow_ups.append(request(req.session_id, "and then?", turns=history, n=2))
    outputs = run_together(worker, follow_ups)
    reference = MlxBackend(loaded)
    reference.load()
    for req, follow_up in zip(first.values(), follow_ups, strict=True):
        alone(reference, req)
        tokens, done = alone(reference, follow_up)
        got_done = outputs[follow_up.response_id][-1]
        # Everything before the new user turn came from the session's own cache, extracted from the batch.
        assert got_done.usage.cached_tokens == done.usage.cached_tokens > 0
        assert state.reply(backend, follow_up.session_id, follow_up.output_item_id).token_ids == tuple(tokens)


def test_a_cancelled_row_leaves_and_the_others_stay_exact(loaded, batched):
    backend, worker = batched
    reference = MlxBackend(loaded)
    reference.load()
    names = ["short", "long", "other"]
    requests = [request(name + "-3", QUESTIONS[name], max_tokens=40) for name in names]
    outputs = run_together(worker, requests, cancel="long-3-r1")
    cancelled = outputs["long-3-r1"]
    assert cancelled[-1].stop_reason == "cancelled"
    # The cancel was sent after the third delta; it landed at the next step.
    assert sum(isinstance(o, TextDelta) for o in cancelled) <= 4
    for name, req in zip(names, requests, strict=True):
        if name != "long":
            tokens, _ = alone(reference, req)
            assert state.reply(backend, req.session_id, req.output_item_id).token_ids == tuple(tokens)


class BudgetBackend(MlxBackend):
    """Records, per engine step, the prefill tokens forwarded and the answers decoded."""

    def __init__(self, path) -> None:
        super().__init__(path, prefill_chunk_tokens=64, prefill_alone_tokens=64)
        self.steps: list[tuple[int, int]] = []
        self._prefilled = 0

    def load(self) -> None:
        super().load()
        prefill = self._scheduler._prefill_together

        def counted(caches, chunks):
            self._prefilled += sum(len(p) for pieces in chunks for p in pieces)
            return prefill(caches, chunks)

        self._scheduler._prefill_together = counted
        self.steps.clear()

    def finish_step(self) -> None:
        self.steps.append((self._prefilled, len(self._scheduler._pending)))
        self._prefilled = 0
        super().finish_step()


def test_long_prompts_share_one_prefill_budget_per_step_while_an_answer_decodes(loaded):
    backend = BudgetBackend(ensure_demo_model())
    worker = EngineWorker(backend)
    worker.start(timeout_s=TIMEOUT_S)
    try:
        talker = request("talker", "hi", max_tokens=48)
        long_prompt = "the quick brown fox jumps over the lazy dog again " * 30
        run_together(worker, [talker, request("reader-1", long_prompt, max_tokens=2)])
        reference = MlxBackend(loaded)
        reference.load()
        tokens, _ = alone(reference, talker)
    finally:
        worker.stop()
    assert state.reply(backend, "talker", "talker-a1").token_ids == tuple(tokens)
    prefilling = [(n_prefill, n_decoding) for n_prefill, n_decoding in backend.steps if n_prefill]
    # About 330 prompt tokens in chunks of at most 64 per step, the talker decoding in the same steps.
    assert len(prefilling) >= 5
    assert all(n_prefill <= 64 for n_prefill, _ in prefilling)
    assert sum(n_decoding > 0 for _, n_decoding in prefilling) >= len(prefilling) - 2


class GroupingBackend(MlxBackend):
    """A small prefill budget, so prompts longer than their share prefill together over many steps."""

    def __init__(self, path) -> None:
        super().__init__(path, prefill_chunk_tokens=64, prefill_alone_tokens=64)
        self.group_sizes: list[int] = []

    def load(self) -> None:
        super().load()
        prefill = self._scheduler._prefill_together

        def recorded(caches, chunks):
            self.group_sizes.append(len(caches))
            return prefill(caches, chunks)

        self._scheduler._prefill_together = recorded


def test_prompts_prefilled_together_give_each_answer_it_gets_alone(loaded):
    backend = GroupingBackend(ensure_demo_model())
    worker = EngineWorker(backend)
    worker.start(timeout_s=TIMEOUT_S)
    reference = MlxBackend(loaded, prefill_chunk_tokens=64, prefill_alone_tokens=64)
    reference.load()
    # Different lengths, all past the 128-token sliding window: each takes a quarter of the budget a step.
    names = ["long", "medium", "other", "short"]
    texts = [
        QUESTIONS["long"],
        QUESTIONS["long"] + QUESTIONS["medium"],
        QUESTIONS["medium"] * 4,
        QUESTIONS["long"] * 2,
    ]
    try:
        first = [request(f"{name}-4", text, max_tokens=8) for name, text in zip(names, texts, strict=True)]
        run_together(worker, first)
        # Second turns prefill on top of caches of different lengths, merged left-padded.
        follow_ups = []
        for req in first:
            said = state.reply(backend, req.session_id, req.output_item_id).text
            history = (*req.turns, Turn("assistant", (TextPart(said),), req.output_item_id))
            follow_ups.append(request(req.session_id, QUESTIONS["long"], turns=history, max_tokens=8, n=2))
        backend.group_sizes.clear()
        run_together(worker, follow_ups)
    finally:
        worker.stop()
    assert max(backend.group_sizes) == len(names)
    for req, follow_up in zip(first, follow_ups, strict=True):
        first_tokens, _ = alone(reference, req)
        assert state.reply(backend, req.session_id, req.output_item_id).token_ids == tuple(first_tokens)
        tokens, _ = alone(reference, follow_up)
        assert state.reply(backend, follow_up.session_id, follow_up.output_item_id).token_ids == tuple(tokens)
