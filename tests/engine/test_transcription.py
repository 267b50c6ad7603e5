"""Transcription by the loaded demo model: Gemma 4's ASR prompt over audio the answer already encoded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.gemma4.audio_encoder import IncrementalAudioEncoder
from realtime.engine.gemma4.loading import load_model
from realtime.engine.gemma4.media import MediaEncoder
from realtime.engine.gemma4.transcription import asr_instruction
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import (
    ENGINE_SAMPLE_RATE_HZ,
    AudioPart,
    AudioTurnStart,
    GenerationDone,
    GenerationRequest,
    TextDelta,
    TranscriptionRequest,
    Turn,
)
from tests.audio.speech import spoken_sentences
from tests.conftest import require_tool

pytestmark = pytest.mark.slow

_ids = itertools.count()


@pytest.fixture(scope="module")
def backend():
    backend = MlxBackend(load_model(ensure_demo_model()), prefill_chunk_tokens=64, prefill_alone_tokens=64)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    require_tool("espeak-ng")
    return spoken_sentences(ENGINE_SAMPLE_RATE_HZ, 3 * ENGINE_SAMPLE_RATE_HZ + 321)


@pytest.fixture
def encodes(monkeypatch) -> dict[str, int]:
    """How often each audio encoding path ran: one-shot clips, and steps of the streamed encoder."""
    counts = {"one_shot": 0, "streamed": 0}

    def counted(name, original):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(MediaEncoder, "_embed_audio", counted("one_shot", MediaEncoder._embed_audio))
    monkeypatch.setattr(
        IncrementalAudioEncoder, "_encode", counted("streamed", IncrementalAudioEncoder._encode)
    )
    return counts


def spoken(samples: np.ndarray) -> tuple[Turn, AudioPart]:
    item_id = f"spoken{next(_ids)}"
    clip = AudioPart(samples, f"{item_id}/0/0")
    return Turn("user", (clip,), item_id), clip


def run(steps) -> tuple[str, GenerationDone]:
    outputs = list(steps)
    text = "".join(o.text for o in outputs if isinstance(o, TextDelta))
    done = outputs[-1]
    assert isinstance(done, GenerationDone)
    return text, done


def answer(backend: MlxBackend, session_id: str, turn: Turn) -> GenerationDone:
    n = next(_ids)
    request = GenerationRequest(session_id, f"r{n}", f"o{n}", "Be brief.", (turn,), max_output_tokens=8)
    return run(backend.generate(request, lambda: False))[1]


def transcribe(backend: MlxBackend, session_id: str, clip: AudioPart) -> tuple[str, GenerationDone]:
    request = TranscriptionRequest(session_id, f"t{next(_ids)}", (clip,), language="en")
    return run(backend.transcribe(request, lambda: False))


def test_transcribes_a_one_shot_turn_without_encoding_its_audio_again(backend, speech, encodes):
    turn, clip = spoken(speech)
    assert answer(backend, "one-shot", turn).stop_reason != "error"
    assert encodes["one_shot"] == 1
    text, done = transcribe(backend, "one-shot", clip)
    assert encodes["one_shot"] == 1 and encodes["streamed"] == 0
    assert text.strip() and done.stop_reason in ("end_of_turn", "max_tokens")
    # 3.02 s of speech is 76 audio tokens; the instruction and chat markup are the text tokens.
    assert done.usage.input_audio_tokens == 76
    assert done.usage.input_text_tokens > 40 and done.usage.output_tokens >= 1
    assert done.usage.cached_tokens == 0


def test_transcribes_a_streamed_turn_from_the_streamed_encoding(backend, speech, encodes):
    turn, clip = spoken(speech)
    start = AudioTurnStart("streamed", "Be brief.", (), turn.item_id, (), clip.key)
    for _ in backend.begin_audio_turn(start):
        pass
    for offset in range(0, len(speech), 640):
        for _ in backend.append_audio_turn("streamed", speech[offset : offset + 640]):
            pass
    assert answer(backend, "streamed", turn).stop_reason != "error"
    n_streamed = encodes["streamed"]
    assert n_streamed > 0 and encodes["one_shot"] == 0
    text, done = transcribe(backend, "streamed", clip)
    assert (encodes["one_shot"], encodes["streamed"]) == (0, n_streamed)
    assert text.strip() and done.usage.input_audio_tokens == 76


def test_transcript_equals_one_from_a_fresh_encode(backend, speech, encodes):
    turn, clip = spoken(speech)
    answer(backend, "reused", turn)
    reused = transcribe(backend, "reused", clip)[0]
    # Another session has none of this clip's rows kept: it encodes the clip itself, to the same text.
    fresh = transcribe(backend, "fresh", clip)[0]
    assert encodes["one_shot"] == 2
    assert reused == fresh


def test_closing_the_session_forgets_its_encoded_audio(backend, speech, encodes):
    turn, clip = spoken(speech)
    answer(backend, "closed", turn)
    backend.drop_session("closed")
    transcribe(backend, "closed", clip)
    assert encodes["one_shot"] == 2


def test_asr_instruction_is_googles_with_the_language_named():
    text = asr_instruction("en", "Gemma")
    assert text.startswith("Transcribe the following speech segment in English into English text.\n\n")
    assert "Only output the transcription, with no newlines." in text
    assert "write the digits" in text and text.endswith("context: Gemma")
    assert asr_instruction().startswith("Transcribe the following speech segment in its original language.")
