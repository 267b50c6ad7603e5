"""Long conversations against a small context: session.truncation with a scripted engine."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import (
    AudioPart,
    BeginAudioTurn,
    GenerationRequest,
    ImagePart,
    TextPart,
    Usage,
)
from realtime.protocol.ids import IdFactory
from realtime.session.session import Session, SessionLimits
from realtime.session.settings import SessionSettings
from tests.conftest import pcm16_b64, silence, tone
from tests.session.test_session import EnergyDetector, drain, drive, generations, run_engine, user_text

REPLY_WORDS = 20
MAX_OUTPUT_TOKENS = 50


def scripted_usage(request: GenerationRequest) -> Usage:
    """A model-like count the session must learn: a word is a token, 25 audio tokens/s, 64 per image,
    four markup tokens per turn and five around the whole prompt."""
    text = 5 + (4 + len(request.instructions.split()) if request.instructions else 0)
    audio = image = 0
    for turn in request.turns:
        text += 4
        for part in turn.parts:
            if isinstance(part, TextPart):
                text += len(part.text.split())
            elif isinstance(part, AudioPart):
                audio += math.ceil(len(part.samples) / 640)
            elif isinstance(part, ImagePart):
                image += 64
    return Usage(input_text_tokens=text, input_audio_tokens=audio, input_image_tokens=image)


def conversation_tokens(request: GenerationRequest) -> int:
    bare = GenerationRequest(request.session_id, "r", "i", request.instructions, ())
    return scripted_usage(request).input_tokens - scripted_usage(bare).input_tokens


def engine(context_tokens: int | None = None) -> FakeBackend:
    return FakeBackend(
        reply=lambda request: " ".join(["ok"] * REPLY_WORDS),
        count_input=scripted_usage,
        context_tokens=context_tokens,
    )


def windowed_session(context_tokens: int | None, **settings) -> Session:
    session = Session(
        "sess_window",
        SessionSettings(max_output_tokens=MAX_OUTPUT_TOKENS, **settings),
        ids=IdFactory(random.Random(0)),
        limits=SessionLimits(context_tokens=context_tokens),
        detector_factory=lambda threshold: EnergyDetector(),
    )
    session.start()
    drain(session)
    return session


def text_rounds(session: Session, backend: FakeBackend, n_rounds: int, n_words: int = 40) -> list[dict]:
    """Each round: a user message and an answer; returns every response.done."""
    done = []
    for n in range(n_rounds):
        message = user_text(" ".join([f"w{n:03d}"] * n_words))
        _, commands = drive(session, message, {"type": "response.create"})
        done += [e for e in run_engine(session, commands, backend) if e["type"] == "response.done"]
    return done


def truncate(session: Session, truncation: str | dict) -> list[dict]:
    events, _ = drive(session, {"type": "session.update", "session": {"truncation": truncation}})
    return events


def retention(ratio: float, post_instructions: int | None = None) -> dict:
    truncation: dict = {"type": "retention_ratio", "retention_ratio": ratio}
    if post_instructions is not None:
        truncation["token_limits"] = {"post_instructions": post_instructions}
    return truncation


def first_turn_changes(requests: list[GenerationRequest]) -> int:
    """Requests that do not extend the previous one (its turns, then its answer): each one makes the
    engine prefill the conversation again instead of extending its cache."""
    n_changes = 0
    for before, after in itertools.pairwise(requests):
        expected = [t.item_id for t in before.turns] + [before.output_item_id]
        if [t.item_id for t in after.turns][: len(expected)] != expected:
            n_changes += 1
    return n_changes


def test_auto_keeps_a_long_conversation_inside_the_context_and_moves_the_window_rarely():
    context_tokens = 1000
    session, backend = windowed_session(context_tokens), engine(context_tokens)
    done = text_rounds(session, backend, 60)
    assert [d["response"]["status"] for d in done] == ["completed"] * 60
    for request in backend.requests:
        assert scripted_usage(request).input_tokens + MAX_OUTPUT_TOKENS <= context_tokens
    # Oldest first: what a request leaves out is always a prefix of the conversation.
    conversation_ids = [item.id for item in session.conversation]
    for request in backend.requests:
        first = conversation_ids.index(request.turns[0].item_id)
        assert [t.item_id for t in request.turns] == conversation_ids[first : first + len(request.turns)]
    n_moves = first_turn_changes(backend.requests)
    # ~68 tokens a round; the window drops to half of ~940 tokens, so it moves every ~7 rounds, not every one.
    assert 5 <= n_moves <= 10
    # Dropped items stay in the conversation: retrieve still finds the very first one.
    events, _ = drive(session, {"type": "conversation.item.retrieve", "item_id": conversation_ids[0]})
    assert events[0]["type"] == "conversation.item.retrieved"


@pytest.mark.parametrize("ratio", [0.3, 0.8])
def test_retention_ratio_sets_how_much_of_the_limit_a_move_keeps(ratio):
    context_tokens = 1000
    session, backend = windowed_session(context_tokens), engine(context_tokens)
    truncate(session, retention(ratio))
    text_rounds(session, backend, 50)
    requests = backend.requests
    # The session learns the overhead on the first answer: the limit for items is the rest of the context.
    limit = context_tokens - MAX_OUTPUT_TOKENS - (scripted_usage(requests[0]).input_tokens - 40)
    moved = [b for a, b in itertools.pairwise(requests) if b.turns[0].item_id != a.turns[0].item_id]
    assert moved
    round_tokens = 4 + 40 + 4 + REPLY_WORDS
    for request in moved:
        assert ratio * limit - round_tokens <= conversation_tokens(request) <= ratio * limit + round_tokens
    assert all(scripted_usage(r).input_tokens + MAX_OUTPUT_TOKENS <= context_tokens for r in requests)


def test_fewer_moves_with_a_lower_retention_ratio():
    moves = {}
    for ratio in (0.3, 0.9):
        session, backend = windowed_session(1000), engine(1000)
        truncate(session, retention(ratio))
        text_rounds(session, backend, 60)
        moves[ratio] = first_turn_changes(backend.requests)
    assert moves[0.3] < moves[0.9]


def test_post_instructions_token_limit_caps_the_conversation_without_a_known_context():
    session, backend = windowed_session(None), engine()
    truncate(session, retention(0.5, post_instructions=400))
    text_rounds(session, backend, 30)
    assert first_turn_changes(backend.requests) >= 3
    assert max(conversation_tokens(r) for r in backend.requests) <= 400


def test_disabled_sends_everything_and_the_overflow_is_a_failed_response_not_a_crash():
    context_tokens = 600
    session, backend = windowed_session(context_tokens), engine(context_tokens)
    truncate(session, "disabled")
    done = text_rounds(session, backend, 12)
    statuses = [d["response"]["status"] for d in done]
    assert "completed" in statuses and statuses[-1] == "failed"
    error = done[-1]["response"]["status_details"]["error"]
    assert "context holds 600" in error["message"]
    # Nothing was dropped: the last request carried every user message.
    last = backend.requests[-1]
    assert [t.item_id for t in last.turns if t.role == "user"] == [
        item.id for item in session.conversation if item.role == "user"
    ]
    # The session goes on: back to auto, the next answer fits again.
    truncate(session, "auto")
    done = text_rounds(session, backend, 1)
    assert done[0]["response"]["status"] == "completed"


def test_disabled_after_a_move_shows_the_whole_conversation_again():
    session, backend = windowed_session(1000), engine()
    text_rounds(session, backend, 30)
    assert first_turn_changes(backend.requests) >= 1
    truncate(session, "disabled")
    text_rounds(session, backend, 1)
    # Every item but the answer being written, oldest first.
    assert [t.item_id for t in backend.requests[-1].turns] == [i.id for i in session.conversation][:-1]


def test_audio_turns_are_costed_from_the_engines_audio_usage():
    context_tokens = 1200
    session = windowed_session(context_tokens, turn_detection=None)
    backend = engine(context_tokens)
    for _ in range(40):
        _, commands = drive(
            session,
            {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(3000))},
            {"type": "input_audio_buffer.commit"},
            {"type": "response.create"},
        )
        events = run_engine(session, commands, backend)
        assert events[-1]["response"]["status"] == "completed"
    # 3 s of audio is ~75 tokens: the estimate was learned, so the window held the context and moved rarely.
    assert all(scripted_usage(r).input_tokens + MAX_OUTPUT_TOKENS <= context_tokens for r in backend.requests)
    assert 2 <= first_turn_changes(backend.requests) <= 8


def test_the_window_moves_when_speech_starts_so_the_stream_is_never_wasted():
    context_tokens = 1000
    session, backend = windowed_session(context_tokens), engine(context_tokens)
    speech = np.concatenate([tone(1500), silence(800)])
    n_streams_continued = n_streams = 0
    for _ in range(30):
        _, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(speech)})
        begins = [c.start for c in commands if isinstance(c, BeginAudioTurn)]
        starts = generations(commands)
        run_engine(session, commands, backend)
        assert len(starts) == 1
        for begin in begins:
            n_streams += 1
            request = starts[0].request
            n_streams_continued += [t.item_id for t in begin.turns] == [t.item_id for t in request.turns[:-1]]
    assert n_streams == 30
    # The window moves when speech starts, with room for a turn like the last ones: the request then
    # carries the very turns the stream began from, and the engine's streamed prefill is used every time.
    assert first_turn_changes(backend.requests) >= 2
    assert n_streams_continued == n_streams
    assert all(scripted_usage(r).input_tokens + MAX_OUTPUT_TOKENS <= context_tokens for r in backend.requests)


@pytest.mark.parametrize(
    "truncation",
    ["auto", "disabled", retention(0.25, post_instructions=2000)],
)
def test_session_updated_states_the_truncation_in_effect(truncation):
    session = windowed_session(1000)
    events = truncate(session, truncation)
    assert events[0]["type"] == "session.updated"
    assert events[0]["session"]["truncation"] == truncation


@pytest.mark.parametrize(
    ("truncation", "param"),
    [
        ("sometimes", "session.truncation"),
        ({"type": "retention_ratio", "retention_ratio": 1.5}, "session.truncation.retention_ratio"),
        ({"type": "retention_ratio"}, "session.truncation.retention_ratio"),
        (retention(0.5, post_instructions=0), "session.truncation.token_limits.post_instructions"),
        ({"type": "retention_ratio", "retention_ratio": 0.5, "extra": 1}, "session.truncation.extra"),
    ],
)
def test_bad_truncation_is_an_error_and_leaves_the_setting(truncation, param):
    session = windowed_session(1000)
    events = truncate(session, truncation)
    assert events[0]["type"] == "error" and events[0]["error"]["param"] == param
    assert session.settings.truncation.mode == "auto"
