"""Streaming prefill on the real tiny model: a turn prefilled while it is spoken answers as one sent whole."""

import itertools
import threading

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from realtime.engine import mlx_backend
from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.gemma4.loading import load_model
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import (
    ENGINE_SAMPLE_RATE_HZ,
    AppendAudioTurn,
    AudioPart,
    AudioTurnStart,
    BeginAudioTurn,
    GenerationDone,
    GenerationRequest,
    ImagePart,
    StartGeneration,
    TextDelta,
    TextPart,
    Turn,
)
from realtime.engine.worker import EngineWorker
from tests.audio.speech import spoken_sentences
from tests.conftest import require_tool
from tests.engine import backend_state as state

pytestmark = pytest.mark.slow

MAX_TOKENS = 12
INSTRUCTIONS = "Answer briefly."
SPOKEN_ITEM = "spoken"
# 20 ms appends, as a client's chunks arrive.
PUSH_N_SAMPLES = 320
# The audio encoder works in 320 ms steps (8 tokens) and needs one token of look-ahead: at most this many
# audio tokens are not yet prefilled when the last sample has been streamed.
MAX_AUDIO_TAIL_TOKENS = 9
SPEECH_N_SAMPLES = 10 * ENGINE_SAMPLE_RATE_HZ + 123

_ids = itertools.count()


@pytest.fixture(scope="module")
def backends():
    made: dict[str, MlxBackend] = {}

    def backend(model_type: str) -> MlxBackend:
        if model_type not in made:
            made[model_type] = MlxBackend(
                load_model(ensure_demo_model(model_type)), prefill_chunk_tokens=64, prefill_alone_tokens=64
            )
            made[model_type].load()
        return made[model_type]

    return backend


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """10 s of espeak-ng speech at 16 kHz: 251 audio tokens, well past the demo model's 128-token window."""
    require_tool("espeak-ng")
    return spoken_sentences(ENGINE_SAMPLE_RATE_HZ, SPEECH_N_SAMPLES)


@pytest.fixture(scope="module")
def image() -> ImagePart:
    rng = np.random.default_rng(1)
    return ImagePart(Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)), "frame")


def request(session_id: str, turns, max_tokens: int = MAX_TOKENS, output_item_id: str | None = None):
    n = next(_ids)
    return GenerationRequest(
        session_id, f"r{n}", output_item_id or f"o{n}", INSTRUCTIONS, tuple(turns), max_tokens
    )


def answer(backend: MlxBackend, req: GenerationRequest) -> tuple[GenerationDone, list[int]]:
    outputs = list(backend.generate(req, lambda: False))
    assert isinstance(outputs[-1], GenerationDone) and outputs[-1].stop_reason != "error"
    return outputs[-1], list(state.reply(backend, req.session_id, req.output_item_id).token_ids)


def answered_first_turn(backend: MlxBackend, session_id: str) -> tuple[Turn, ...]:
    first = Turn("user", (TextPart("hello there"),), "typed")
    # The same answer id in every session, so that each replays its own tokens for it.
    req = request(session_id, [first], output_item_id="first-answer")
    answer(backend, req)
    said = state.reply(backend, session_id, req.output_item_id).text
    return first, Turn("assistant", (TextPart(said),), req.output_item_id)


def spoken_turn(samples: np.ndarray, images=()) -> Turn:
    return Turn("user", (*images, AudioPart(samples, f"{SPOKEN_ITEM}/{len(images)}")), SPOKEN_ITEM)


def stream(backend: MlxBackend, session_id: str, history, turn: Turn, n_samples: int) -> None:
    """What the session sends while the user speaks: the turn's start, then every sample as it arrives."""
    *images, audio = turn.parts
    start = AudioTurnStart(session_id, INSTRUCTIONS, tuple(history), turn.item_id, tuple(images), audio.key)
    for _ in backend.begin_audio_turn(start):
        pass
    for offset in range(0, n_samples, PUSH_N_SAMPLES):
        for _ in backend.append_audio_turn(
            session_id, audio.samples[offset : min(n_samples, offset + PUSH_N_SAMPLES)]
        ):
            pass


def cache_arrays(snapshot) -> list[np.ndarray]:
    return [np.array(a.astype(mx.float32)) for (k, v), _ in snapshot.layers for a in (k, v) if a is not None]


@pytest.mark.parametrize(
    "model_type, with_image", [("gemma4", False), ("gemma4", True), ("gemma4_unified", True)]
)
def test_streamed_turn_answers_as_the_turn_sent_whole(backends, speech, image, model_type, with_image):
    backend = backends(model_type)
    results = {}
    for streamed in (False, True):
        session_id = f"same-{model_type}-{with_image}-{streamed}"
        history = answered_first_turn(backend, session_id)
        turn = spoken_turn(speech, [image] if with_image else [])
        if streamed:
            stream(backend, session_id, history, turn, len(speech))
        results[streamed] = answer(backend, request(session_id, [*history, turn]))
    (whole, whole_ids), (streamed, streamed_ids) = results[False], results[True]
    assert streamed_ids == whole_ids
    assert streamed.usage.input_tokens == whole.usage.input_tokens
    assert streamed.usage.input_audio_tokens == 251
    # Turn 1 was cached either way; the streamed one also holds the turn's opening and nearly all its audio.
    assert streamed.usage.cached_tokens > whole.usage.cached_tokens + 251 - MAX_AUDIO_TAIL_TOKENS


def test_only_the_tail_is_left_to_prefill_when_the_user_stops(backends, speech):
    backend = backends("gemma4")
    history = answered_first_turn(backend, "tail")
    turn = spoken_turn(speech)
    # The session commits what it streamed plus the last append's remainder: here 100 ms.
    n_remainder = 100 * ENGINE_SAMPLE_RATE_HZ // 1000
    stream(backend, "tail", history, turn, len(speech) - n_remainder)
    req = request("tail", [*history, turn])
    prompt = state.render_prompt(backend, req)
    held = state.cached_keys(backend, "tail")
    assert held == prompt.keys[: len(held)]
    done, _ = answer(backend, req)

    n_left = len(prompt.ids) - len(held)
    assert done.usage.cached_tokens == len(held)
    assert done.usage.input_tokens == len(prompt.ids)
    audio = prompt.media[-1]
    n_closing = len(prompt.ids) - (audio.start + audio.n_tokens)  # <audio|> <turn|> \n <|turn> model \n
    n_remainder_tokens = -(-n_remainder // 640)
    assert n_left <= MAX_AUDIO_TAIL_TOKENS + n_remainder_tokens + n_closing, (n_left, n_closing)
    assert n_left < 20


def test_abandoned_turn_leaves_the_cache_exactly_as_before(backends, speech):
    backend = backends("gemma4")
    history = answered_first_turn(backend, "abandoned")
    answered_first_turn(backend, "never-streamed")
    before = state.snapshot(backend, "abandoned")
    saved = cache_arrays(before)
    stream(backend, "abandoned", history, spoken_turn(speech), len(speech))
    # The turn went in, past the 128-token sliding window: no trim could undo it, only the snapshot.
    assert len(state.cached_keys(backend, "abandoned")) > len(before.keys) + 128

    backend.abandon_audio_turn("abandoned")
    assert state.cached_keys(backend, "abandoned") == before.keys
    restored = cache_arrays(state.snapshot(backend, "abandoned"))
    assert all(np.array_equal(a, b) for a, b in zip(restored, saved, strict=True))

    follow_up = [*history, Turn("user", (TextPart("tell me more"),), "typed-again")]
    abandoned, abandoned_ids = answer(backend, request("abandoned", follow_up))
    reference, reference_ids = answer(backend, request("never-streamed", follow_up))
    assert abandoned_ids == reference_ids
    assert abandoned.usage.cached_tokens == reference.usage.cached_tokens == len(before.keys)


def _truncated_answer(history, turn, speech):
    return [history[0], Turn("assistant", (TextPart("yes"),), history[1].item_id), turn]


def _other_audio(history, turn, speech):
    return [*history, spoken_turn(speech[::-1].copy())]


def _typed_instead(history, turn, speech):
    return [*history, Turn("user", (TextPart("never mind"),), "typed-instead")]


@pytest.mark.parametrize("changed", [_truncated_answer, _other_audio, _typed_instead])
def test_a_request_that_does_not_continue_the_turn_rolls_it_back(backends, speech, changed):
    backend = backends("gemma4")
    sessions = {name: f"{changed.__name__}-{name}" for name in ("streamed", "never-streamed")}
    for session_id in sessions.values():
        history = answered_first_turn(backend, session_id)
    stream(backend, sessions["streamed"], history, spoken_turn(speech), len(speech) - 1000)
    turns = changed(history, spoken_turn(speech), speech)
    streamed, streamed_ids = answer(backend, request(sessions["streamed"], turns))
    reference, reference_ids = answer(backend, request(sessions["never-streamed"], turns))
    assert streamed_ids == reference_ids
    assert streamed.usage.cached_tokens == reference.usage.cached_tokens
    # The stream is over: later audio for it changes nothing.
    before = state.cached_keys(backend, sessions["streamed"])
    for _ in backend.append_audio_turn(sessions["streamed"], speech[:16_000]):
        pass
    assert state.cached_keys(backend, sessions["streamed"]) == before


class OrderedBackend(MlxBackend):
    """The real backend, logging each step the worker gives a streamed turn, the one that ends a job too."""

    def __init__(self, path, log: list) -> None:
        super().__init__(path, prefill_chunk_tokens=64, prefill_alone_tokens=64)
        self.log = log

    def begin_audio_turn(self, start):
        return self._logged(super().begin_audio_turn(start))

    def append_audio_turn(self, session_id, samples):
        return self._logged(super().append_audio_turn(session_id, samples))

    def _logged(self, steps):
        while True:
            self.log.append("stream")
            try:
                step = next(steps)
            except StopIteration:
                return
            yield step


def test_a_streamed_turn_and_another_sessions_answer_take_turns(speech):
    log: list[str] = []
    worker = EngineWorker(OrderedBackend(ensure_demo_model(), log))
    worker.start(timeout_s=300)
    results: dict[str, GenerationDone] = {}
    both_done = threading.Event()

    def sink(name):
        def receive(output):
            if isinstance(output, TextDelta) and name == "answer":
                log.append("answer")
            elif isinstance(output, GenerationDone):
                results[name] = output
                if len(results) == 2:
                    both_done.set()

        return receive

    turn = spoken_turn(speech)
    try:
        start = AudioTurnStart("speaker", INSTRUCTIONS, (), SPOKEN_ITEM, (), turn.parts[0].key)
        worker.send(BeginAudioTurn(start), sink("stream"))
        for offset in range(0, len(speech), PUSH_N_SAMPLES):
            samples = speech[offset : offset + PUSH_N_SAMPLES]
            worker.send(AppendAudioTurn("speaker", samples), sink("stream"))
        worker.send(StartGeneration(request("speaker", [turn])), sink("spoken"))
        talker = request("talker", [Turn("user", (TextPart("hello"),), "t")], max_tokens=40)
        worker.send(StartGeneration(talker), sink("answer"))
        assert both_done.wait(120)
    finally:
        worker.stop()

    assert results["answer"].stop_reason != "error" and results["spoken"].stop_reason != "error"
    assert results["spoken"].usage.cached_tokens >= results["spoken"].usage.input_tokens - 20
    # The answer was written while the other session streamed (the pushes, sent faster than real time,
    # were heard in second-long steps).

    def last_index(kind: str) -> int:
        return len(log) - 1 - log[::-1].index(kind)

    first, end = log.index("answer"), min(last_index("answer"), last_index("stream"))
    assert log[first:end].count("stream") >= 5
    runs = [(kind, len(list(group))) for kind, group in itertools.groupby(log[first : end + 1])]
    # Each step gives both sessions one unit; the session that goes first alternates from step to step.
    assert max(n for _, n in runs) <= 2, " ".join(log)
    assert sum(n for kind, n in runs if kind == "answer") >= 5


def test_sessions_speaking_at_once_are_encoded_together_and_answer_as_alone(backends, speech):
    backend = backends("gemma4")
    pass_sizes: list[int] = []
    encode = mlx_backend._encode_together

    def recorded(pushes):
        pass_sizes.append(len(pushes))
        return encode(pushes)

    # Three speakers saying different things at the same pace: their encoder steps fall due together.
    names = [f"together-{i}" for i in range(3)]
    turns = {name: spoken_turn(speech[1000 * i :]) for i, name in enumerate(names)}
    speaking = {}
    for name in names:
        turn = turns[name]
        start = AudioTurnStart(name, INSTRUCTIONS, (), turn.item_id, (), turn.parts[-1].key)
        speaking[name] = _speaker(backend, start, turn.parts[-1].samples)
    mlx_backend._encode_together = recorded
    try:
        while speaking:
            for name, steps in list(speaking.items()):
                if next(steps, StopIteration) is StopIteration:
                    del speaking[name]
            backend.finish_step()
    finally:
        mlx_backend._encode_together = encode
    assert max(pass_sizes) == len(names)
    for name in names:
        streamed, streamed_ids = answer(backend, request(name, [turns[name]]))
        whole, whole_ids = answer(backend, request(f"{name}-whole", [turns[name]]))
        assert streamed_ids == whole_ids
        assert streamed.usage.cached_tokens > whole.usage.cached_tokens + 200


def _speaker(backend: MlxBackend, start: AudioTurnStart, samples: np.ndarray):
    yield from backend.begin_audio_turn(start)
    for offset in range(0, len(samples), PUSH_N_SAMPLES):
        yield from backend.append_audio_turn(start.session_id, samples[offset : offset + PUSH_N_SAMPLES])
        yield None
