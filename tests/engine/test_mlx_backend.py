import itertools
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from PIL import Image

from realtime.engine.demo_model import build_demo_model
from realtime.engine.gemma4.loading import load_model
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import (
    AudioPart,
    GenerationDone,
    GenerationRequest,
    ImagePart,
    SamplingSettings,
    TextDelta,
    TextPart,
    Turn,
)
from tests.engine import backend_state as state

pytestmark = pytest.mark.slow

MULTIMODAL_IDS = (255_999, 256_000, 258_880, 258_881, 258_882, 258_883)
END_OF_TURN_ID = 106
NEWLINE_ID = 107
CHANNEL_START_ID, CHANNEL_END_ID = 100, 101
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(build_demo_model(tmp_path_factory.mktemp("demo"), seed=0, model_type="gemma4"))


@pytest.fixture(scope="module")
def backend(loaded):
    backend = MlxBackend(loaded, prefill_chunk_tokens=64, prefill_alone_tokens=64)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def audio():
    # 2 s and a few samples: one more processor token than encoder frames, mlx-vlm's wrap-around case.
    return np.random.default_rng(2).uniform(-0.3, 0.3, 32_100).astype(np.float32)


_ids = itertools.count()


def request(turns, session_id=None, max_tokens=MAX_TOKENS, **kwargs) -> GenerationRequest:
    n = next(_ids)
    return GenerationRequest(
        session_id=session_id or f"s{n}",
        response_id=f"r{n}",
        output_item_id=f"o{n}",
        instructions=kwargs.pop("instructions", ""),
        turns=tuple(turns),
        max_output_tokens=max_tokens,
        **kwargs,
    )


def user(*parts, item_id=None) -> Turn:
    return Turn(
        "user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts), item_id or f"u{next(_ids)}"
    )


def run(backend, req, should_stop: Callable[[], bool] = lambda: False):
    outputs = [o for o in backend.generate(req, should_stop) if o is not None]
    assert isinstance(outputs[-1], GenerationDone)
    # Work without text yields None, never an empty delta.
    assert all(isinstance(o, TextDelta) and o.text for o in outputs[:-1])
    return outputs[:-1], outputs[-1]


def answer_ids(backend, req) -> list[int]:
    return list(state.reply(backend, req.session_id, req.output_item_id).token_ids)


def reference_ids(loaded, parts, max_tokens=MAX_TOKENS) -> list[int]:
    """mlx-vlm's own greedy answer for one user turn, its prompt written by the checkpoint's chat template."""
    from mlx_vlm import generate

    content = [
        {"type": "text", "text": p.text}
        if isinstance(p, TextPart)
        else {"type": "audio" if isinstance(p, AudioPart) else "image"}
        for p in parts
    ]
    processor = loaded.processor
    prompt = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    processor.tokenizer.stopping_criteria.reset(loaded.model.config.eos_token_id)
    result = generate(
        loaded.model,
        processor,
        prompt,
        max_tokens=max_tokens,
        temperature=0.0,
        image=[p.image for p in parts if isinstance(p, ImagePart)] or None,
        audio=[p.samples for p in parts if isinstance(p, AudioPart)] or None,
    )
    return list(result.token_ids)


class ScriptedHead(nn.Embedding):
    """The model's tied embedding with a rigged output head: `bias_for(last input id)` is added to the logits.

    The input side is unchanged; the engine's sampler, stop handling, filters and detokenizer run for real.
    """

    def __init__(self, original: nn.Embedding, bias_for: Callable[[int], dict[int, float]]):
        super().__init__(*original.weight.shape)
        self.weight = original.weight
        self._bias_for = bias_for
        self._last_id = -1

    def __call__(self, ids):
        self._last_id = int(ids.reshape(-1)[-1].item())
        return super().__call__(ids)

    def as_linear(self, x):
        bias = np.zeros(self.weight.shape[0], np.float32)
        for token_id, value in self._bias_for(self._last_id).items():
            bias[token_id] = value
        return super().as_linear(x) + mx.array(bias).astype(x.dtype)


@contextmanager
def scripted_head(loaded, bias_for):
    text_model = loaded.model.language_model.model
    original = text_model.embed_tokens
    text_model.embed_tokens = ScriptedHead(original, bias_for)
    try:
        yield
    finally:
        text_model.embed_tokens = original


def forcing(script: dict[int, int]) -> Callable[[int], dict[int, float]]:
    return lambda last_id: {script[last_id]: 100.0} if last_id in script else {}


def check_against_mlx_vlm(backend, loaded, parts) -> None:
    req = request([user(*parts)])
    deltas, done = run(backend, req)
    expected = reference_ids(loaded, parts)
    assert answer_ids(backend, req) == expected
    assert done.stop_reason == "max_tokens" and done.usage.output_tokens == MAX_TOKENS
    assert "".join(d.text for d in deltas) == loaded.processor.tokenizer.decode(
        expected, skip_special_tokens=True
    )
    assert done.usage.input_image_tokens == 63 * sum(isinstance(p, ImagePart) for p in parts)
    assert done.usage.input_audio_tokens == 51 * sum(isinstance(p, AudioPart) for p in parts)


MODALITIES = ["text", "image", "audio", "audio+image"]


def parts_for(modalities, image, audio):
    media = {"image": ImagePart(image, "img"), "audio": AudioPart(audio, "clip")}
    return [media[m] for m in modalities.split("+") if m in media] + [TextPart("what is this")]


@pytest.mark.parametrize("modalities", MODALITIES)
def test_greedy_answer_equals_mlx_vlm_token_for_token(backend, loaded, image, audio, modalities):
    check_against_mlx_vlm(backend, loaded, parts_for(modalities, image, audio))


@pytest.fixture(scope="module")
def unified(tmp_path_factory):
    loaded = load_model(
        build_demo_model(tmp_path_factory.mktemp("unified"), seed=0, model_type="gemma4_unified")
    )
    backend = MlxBackend(loaded, prefill_chunk_tokens=64, prefill_alone_tokens=64)
    backend.load()
    return backend, loaded


@pytest.mark.parametrize("modalities", MODALITIES)
def test_unified_greedy_answer_equals_mlx_vlm_token_for_token(unified, image, audio, modalities):
    check_against_mlx_vlm(*unified, parts_for(modalities, image, audio))


def test_multimodal_ids_are_never_emitted_even_when_they_win(backend, loaded):
    parts = [TextPart("hello")]
    favoured = {token_id: 60.0 + i for i, token_id in enumerate(MULTIMODAL_IDS)}
    with scripted_head(loaded, lambda _: favoured):
        unsuppressed = reference_ids(loaded, parts, max_tokens=4)
        req = request([user(*parts)], max_tokens=8)
        deltas, done = run(backend, req)
    assert set(unsuppressed) <= set(MULTIMODAL_IDS)
    assert done.usage.output_tokens == 8
    assert not set(answer_ids(backend, req)) & set(MULTIMODAL_IDS)


def free_run_and_end(backend) -> tuple[list[int], int]:
    """A free-running answer to "hello", and a k at which <turn|> can be forced to follow its k-th token
    (that token's first appearance, so the answer before it is unchanged)."""
    req = request([user("hello")], max_tokens=12)
    run(backend, req)
    free_run = answer_ids(backend, req)
    return free_run, next(i for i in range(3, len(free_run)) if free_run[i - 1] not in free_run[: i - 1])


def test_answer_ends_at_end_of_turn_without_emitting_it(backend, loaded):
    free_run, k = free_run_and_end(backend)
    opening = user("hello", item_id="u1")
    with scripted_head(loaded, forcing({free_run[k - 1]: END_OF_TURN_ID})):
        stopped = request([opening], session_id="ended", max_tokens=12)
        deltas, done = run(backend, stopped)
    assert answer_ids(backend, stopped) == free_run[:k]
    assert done.stop_reason == "end_of_turn" and done.usage.output_tokens == k
    text = "".join(d.text for d in deltas)
    assert text == loaded.processor.tokenizer.decode(free_run[:k], skip_special_tokens=True)
    assert "<turn|>" not in text
    # <turn|> went through the model (the step after a token is queued before the token is read), and
    # the next turn's prompt has it right there: the whole answer and its end marker are cached.
    said = Turn("assistant", (TextPart(text),), stopped.output_item_id)
    _, next_done = run(backend, request([opening, said, user("more")], session_id="ended"))
    assert next_done.usage.cached_tokens == done.usage.input_tokens + k + 1


def test_a_cancel_landing_on_end_of_turn_replays_the_answer_closed_once(backend, loaded):
    free_run, k = free_run_and_end(backend)
    opening = user("hello", item_id="u1")

    def end_of_turn_just_fed() -> bool:
        # The step that fed <turn|> has run; the answer has not yet seen it.
        return state.cached_keys(backend, "cut-at-end")[-1:] == (END_OF_TURN_ID,)

    with scripted_head(loaded, forcing({free_run[k - 1]: END_OF_TURN_ID})):
        cut = request([opening], session_id="cut-at-end", max_tokens=12)
        deltas, done = run(backend, cut, end_of_turn_just_fed)
    assert done.stop_reason == "cancelled"
    assert answer_ids(backend, cut) == free_run[:k]
    said = Turn("assistant", (TextPart("".join(d.text for d in deltas)),), cut.output_item_id)
    follow_up = request([opening, said, user("more")], session_id="cut-at-end")
    prompt_ids = state.render_prompt(backend, follow_up).ids
    n_prompt = done.usage.input_tokens
    # The answer, then the turn closed once, and the cache holds all of it.
    assert prompt_ids[n_prompt : n_prompt + k + 2] == (*free_run[:k], END_OF_TURN_ID, NEWLINE_ID)
    _, next_done = run(backend, follow_up)
    assert next_done.usage.cached_tokens == n_prompt + k + 1


def test_thinking_channel_never_reaches_deltas(backend, loaded):
    tokenizer = loaded.processor.tokenizer
    thought, spoken = tokenizer.convert_tokens_to_ids(["▁hello", "▁yes"])
    newline = tokenizer.convert_tokens_to_ids("\n")
    script = {
        newline: CHANNEL_START_ID,
        CHANNEL_START_ID: thought,
        thought: CHANNEL_END_ID,
        CHANNEL_END_ID: spoken,
        spoken: END_OF_TURN_ID,
    }
    with scripted_head(loaded, forcing(script)):
        req = request([user("what")])
        deltas, done = run(backend, req)
    assert answer_ids(backend, req) == [CHANNEL_START_ID, thought, CHANNEL_END_ID, spoken]
    assert "".join(d.text for d in deltas) == " yes"
    assert done.stop_reason == "end_of_turn"


def test_multibyte_characters_split_across_tokens_arrive_whole(backend, loaded):
    tokenizer = loaded.processor.tokenizer
    euro = tokenizer.convert_tokens_to_ids(["<0xE2>", "<0x82>", "<0xAC>"])
    word = tokenizer.convert_tokens_to_ids("▁yes")
    newline = tokenizer.convert_tokens_to_ids("\n")
    # "€" is three byte-fallback tokens; the answer is € yes € yes …, cut after seven tokens.
    script = {newline: euro[0], euro[0]: euro[1], euro[1]: euro[2], euro[2]: word, word: euro[0]}
    with scripted_head(loaded, forcing(script)):
        req = request([user("what")], max_tokens=7)
        deltas, _ = run(backend, req)
    texts = [d.text for d in deltas]
    assert "".join(texts) == "€ yes€"
    assert all("\ufffd" not in t for t in texts)
    assert texts.count("€") == 2


def two_turns(backend, session_id, between=lambda: None):
    first = request([user("hello", item_id="u1")], session_id=session_id)
    _, first_done = run(backend, first)
    said = state.reply(backend, session_id, first.output_item_id).text
    between()
    history = [user("hello", item_id="u1"), Turn("assistant", (TextPart(said),), first.output_item_id)]
    second = request([*history, user("tell me more", item_id="u2")], session_id=session_id)
    _, second_done = run(backend, second)
    return first_done, second_done, answer_ids(backend, second)


def test_turn_two_prefills_only_new_tokens_and_matches_a_cold_prefill(backend):
    first_done, second_done, warm_answer = two_turns(backend, "warm")
    # Cached: turn 1's prompt and every answer token but the last (sampled, never fed).
    assert second_done.usage.cached_tokens == first_done.usage.input_tokens + MAX_TOKENS - 1
    assert second_done.usage.input_tokens > second_done.usage.cached_tokens
    # The same conversation with the cache emptied between turns (replies kept): a full cold prefill.
    empty = state.snapshot(backend, "cold")
    _, cold_done, cold_answer = two_turns(backend, "cold", lambda: state.restore(backend, "cold", empty))
    assert cold_done.usage.cached_tokens == 0
    assert cold_done.usage.input_tokens == second_done.usage.input_tokens
    assert warm_answer == cold_answer


def second_turn(backend, session_id: str) -> GenerationRequest:
    """Answers a first turn in the session; returns the request for the next one."""
    first = request([user("hello", item_id="u1")], session_id=session_id)
    run(backend, first)
    said = state.reply(backend, session_id, first.output_item_id).text
    history = [user("hello", item_id="u1"), Turn("assistant", (TextPart(said),), first.output_item_id)]
    return request([*history, user("tell me more", item_id="u2")], session_id=session_id)


def test_a_cached_conversations_new_turn_starts_its_answer_in_one_forward(backend):
    second = second_turn(backend, "one-forward")
    with state.forwards(backend) as kinds:
        _, done = run(backend, second)
    # The new turn and the logits after it come from one forward; then one decode step per answer token
    # but the last (sampled, never fed).
    assert kinds == ["prompt end"] + ["decode"] * (done.usage.output_tokens - 1)
    # A prompt that starts the cache is prefilled as mlx-vlm does: all but its last token, then that one.
    with state.forwards(backend) as kinds:
        _, cold = run(backend, request(second.turns))
    n_fed = cold.usage.output_tokens
    assert set(kinds[:-n_fed]) == {"prefill"} and kinds[-n_fed:] == ["decode"] * n_fed


def test_a_new_turn_cancelled_before_it_starts_runs_no_forward_and_keeps_the_cache(backend):
    second = second_turn(backend, "cancelled-turn")
    before = state.cached_keys(backend, "cancelled-turn")
    with state.forwards(backend) as kinds:
        _, done = run(backend, second, lambda: True)
    assert done.stop_reason == "cancelled" and kinds == []
    assert state.cached_keys(backend, "cancelled-turn") == before


def test_cancel_stops_within_one_step(backend):
    cancelled = False
    req = request([user("hello")], max_tokens=200)
    outputs = backend.generate(req, lambda: cancelled)
    n_texts = 0
    for output in outputs:
        n_texts += output is not None
        if n_texts == 5:
            cancelled = True
            break
    done = next(outputs)
    assert isinstance(done, GenerationDone) and done.stop_reason == "cancelled"
    # The partial answer is kept as said: its tokens are what the next turn replays.
    assert done.usage.output_tokens == len(answer_ids(backend, req)) < 200


def test_cancel_during_prefill_keeps_the_finished_chunks(backend):
    long_text = " ".join(["hello world"] * 120)
    req = request([user(long_text, item_id="long")], session_id="prefill-cancel")
    outputs = backend.generate(req, lambda: cancelled)
    cancelled = False
    assert next(outputs) is None  # the first 64-token chunk
    cancelled = True
    output = next(outputs)
    assert output.stop_reason == "cancelled" and output.usage.output_tokens == 0
    assert len(state.cached_keys(backend, "prefill-cancel")) == 64
    again = request([user(long_text, item_id="long")], session_id="prefill-cancel")
    _, done = run(backend, again)
    assert done.usage.cached_tokens == 64


def test_out_of_band_answer_leaves_the_session_cache_alone(backend):
    run(backend, request([user("hello", item_id="u1")], session_id="oob"))
    before = state.cached_keys(backend, "oob")
    _, done = run(backend, request([user("hello", item_id="u1")], session_id="oob", use_session_cache=False))
    assert done.usage.cached_tokens == 0
    assert state.cached_keys(backend, "oob") == before


def cache_arrays(snapshot) -> list[np.ndarray]:
    return [np.array(a.astype(mx.float32)) for (k, v), _ in snapshot.layers for a in (k, v) if a is not None]


def test_snapshot_restore_is_exact(backend):
    # Past the 128-token sliding window, a one-token forward writes into the rotating buffer in place.
    long_text = " ".join(["hello world"] * 70)
    opening = [user(long_text, item_id="u1")]

    def follow_up(session_id):
        said = state.reply(backend, session_id, "opening").text
        return request(
            [*opening, Turn("assistant", (TextPart(said),), "opening"), user("more", item_id="u2")],
            session_id=session_id,
        )

    for session_id in ("snap", "snap-reference"):
        run(backend, replace(request(opening, session_id=session_id), output_item_id="opening"))
    reference = follow_up("snap-reference")
    run(backend, reference)

    snapshot = state.snapshot(backend, "snap")
    saved = cache_arrays(snapshot)
    # Decoding writes single tokens into the rotating buffer in place, past its window.
    run(backend, follow_up("snap"))
    assert len(state.cached_keys(backend, "snap")) > len(snapshot.keys)
    assert all(np.array_equal(a, b) for a, b in zip(cache_arrays(snapshot), saved, strict=True))
    state.restore(backend, "snap", snapshot)
    assert state.cached_keys(backend, "snap") == snapshot.keys
    assert all(
        np.array_equal(a, b)
        for a, b in zip(cache_arrays(state.snapshot(backend, "snap")), saved, strict=True)
    )

    second = follow_up("snap")
    _, done = run(backend, second)
    assert done.usage.cached_tokens == len(snapshot.keys) > 128
    assert answer_ids(backend, second) == answer_ids(backend, reference)


def test_interleaved_sessions_answer_as_they_would_alone(backend, image):
    requests = [
        request([user(ImagePart(image, "img"), "what")]),
        request([user("hello there")], max_tokens=24),
    ]
    alone = []
    for req in requests:
        run(backend, req)
        alone.append(answer_ids(backend, req))
    twins = [replace(req, session_id=req.session_id + "-twin") for req in requests]
    # Round-robin one step at a time, as the worker does.
    steps = [backend.generate(req, lambda: False) for req in twins]
    while steps:
        for step in list(steps):
            if isinstance(next(step), GenerationDone):
                steps.remove(step)
    assert [answer_ids(backend, req) for req in twins] == alone


def test_edit_after_the_sliding_window_wrapped_falls_back_to_a_cold_prefill(backend):
    long_text = " ".join(["hello world"] * 70)
    first = request([user(long_text, item_id="u1")], session_id="edited")
    run(backend, first)
    # The client truncated the answer: the cache must drop tokens, which a wrapped window cannot.
    edited = [
        user(long_text, item_id="u1"),
        Turn("assistant", (TextPart("yes"),), first.output_item_id),
        user("more", item_id="u2"),
    ]
    second = request(edited, session_id="edited")
    _, done = run(backend, second)
    assert done.usage.cached_tokens == 0
    fresh = request(edited, session_id="never-cached")
    run(backend, fresh)
    assert answer_ids(backend, second) == answer_ids(backend, fresh)


def test_sampling_with_a_seed_is_reproducible_and_differs_from_greedy(backend):
    sampling = SamplingSettings(temperature=1.0, top_p=0.9, seed=7)
    answers = []
    for _ in range(2):
        req = request([user("hello")], sampling=sampling)
        run(backend, req)
        answers.append(answer_ids(backend, req))
    greedy = request([user("hello")])
    run(backend, greedy)
    assert answers[0] == answers[1]
    assert answers[0] != answer_ids(backend, greedy)


def test_a_prompt_past_the_context_fails_and_an_answer_ends_where_the_context_does(backend):
    assert backend.context_tokens == 131_072  # the demo model's max_position_embeddings
    turn = user("Tell me a long story about the sea.")
    n_prompt = len(state.render_prompt(backend, request([turn])).ids)
    try:
        backend.context_tokens = n_prompt
        _, done = run(backend, request([turn]))
        assert done.stop_reason == "error" and f"context holds {n_prompt}" in done.error_message
        assert done.usage.input_tokens == n_prompt and done.usage.output_tokens == 0
        backend.context_tokens = n_prompt + 3
        _, done = run(backend, request([turn], max_tokens=MAX_TOKENS))
        assert (done.stop_reason, done.usage.output_tokens) == ("max_tokens", 3)
    finally:
        backend.context_tokens = 131_072
