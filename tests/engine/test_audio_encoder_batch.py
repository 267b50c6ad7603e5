"""Several speakers' audio encoded in one pass gives each of them exactly the rows of their own pushes."""

from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import pytest

from realtime.engine.demo_model import build_demo_model
from realtime.engine.gemma4.audio_encoder import (
    FrameAudioEncoder,
    IncrementalAudioEncoder,
    push_together,
)
from realtime.engine.gemma4.loading import load_model
from realtime.engine.port import ENGINE_SAMPLE_RATE_HZ
from tests.audio.speech import spoken_sentences
from tests.conftest import require_tool
from tests.engine.test_audio_encoder import (
    MAX_ABS_DIFF,
    N_SAMPLES_PER_MS,
    max_abs_diff,
    prompt_rows,
    tower_rows,
)

pytestmark = pytest.mark.slow

SPEECH_N_SAMPLES = 9 * ENGINE_SAMPLE_RATE_HZ


@dataclass(frozen=True)
class Speaker:
    offset_ms: int  # where in the speech the clip starts, so that speakers say different things
    n_samples: int
    push_ms: int
    join_round: int  # the round of pushes in which the speaker starts talking

    def pieces(self, speech: np.ndarray) -> list[np.ndarray]:
        clip = self.clip(speech)
        n_push = self.push_ms * N_SAMPLES_PER_MS
        return [clip[i : i + n_push] for i in range(0, len(clip), n_push)]

    def clip(self, speech: np.ndarray) -> np.ndarray:
        start = self.offset_ms * N_SAMPLES_PER_MS
        return speech[start : start + self.n_samples]


# Different clips, push sizes and start times: the speakers' left contexts and new-frame counts differ,
# their steps fall due in different rounds, and the batch changes as speakers join and leave.
SPEAKERS = (
    Speaker(offset_ms=0, n_samples=48_037, push_ms=20, join_round=0),
    Speaker(offset_ms=700, n_samples=64_100, push_ms=320, join_round=0),
    Speaker(offset_ms=1_310, n_samples=40_001, push_ms=1_000, join_round=3),
    Speaker(offset_ms=2_000, n_samples=80_000, push_ms=100, join_round=1),
    Speaker(offset_ms=3_333, n_samples=59_200, push_ms=333, join_round=7),
    Speaker(offset_ms=150, n_samples=19_700, push_ms=47, join_round=20),
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(build_demo_model(tmp_path_factory.mktemp("demo"), seed=0))


@pytest.fixture(scope="module")
def unified(tmp_path_factory):
    return load_model(
        build_demo_model(tmp_path_factory.mktemp("unified"), seed=0, model_type="gemma4_unified")
    )


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    require_tool("espeak-ng")
    return spoken_sentences(ENGINE_SAMPLE_RATE_HZ, SPEECH_N_SAMPLES)


def rounds(speakers, speech) -> list[dict[int, tuple[np.ndarray, bool]]]:
    """Round r: each talking speaker's piece of audio and whether it is their last, by speaker index."""
    pieces = [speaker.pieces(speech) for speaker in speakers]
    n_rounds = max(speaker.join_round + len(p) for speaker, p in zip(speakers, pieces, strict=True))
    talking: list[dict[int, tuple[np.ndarray, bool]]] = [{} for _ in range(n_rounds)]
    for i, (speaker, speaker_pieces) in enumerate(zip(speakers, pieces, strict=True)):
        for n, piece in enumerate(speaker_pieces):
            talking[speaker.join_round + n][i] = (piece, n == len(speaker_pieces) - 1)
    return talking


def assert_same_rows(together: mx.array, alone: mx.array) -> None:
    assert together.shape == alone.shape
    assert together.dtype == alone.dtype
    if alone.shape[0]:
        assert max_abs_diff(together, alone) <= MAX_ABS_DIFF


def test_pushed_together_equals_pushed_alone(loaded, speech):
    alone = [IncrementalAudioEncoder(loaded.model, loaded.processor) for _ in SPEAKERS]
    together = [IncrementalAudioEncoder(loaded.model, loaded.processor) for _ in SPEAKERS]
    streamed: list[list[mx.array]] = [[] for _ in SPEAKERS]
    n_due_per_call = []
    for pieces in rounds(SPEAKERS, speech):
        talking = sorted(pieces)
        rows = push_together([together[i] for i in talking], [pieces[i][0] for i in talking])
        for i, together_rows in zip(talking, rows, strict=True):
            assert_same_rows(together_rows, alone[i].push(pieces[i][0]))
            streamed[i].append(together_rows)
        n_due_per_call.append((sum(r.shape[0] > 0 for r in rows), len(talking)))
        for i in talking:
            if pieces[i][1]:
                finished = together[i].finish()
                assert_same_rows(finished, alone[i].finish())
                streamed[i].append(finished)
    # The batches had several due speakers and also speakers not due (who only stored their samples).
    assert max(n_due for n_due, _ in n_due_per_call) >= 3
    assert any(0 < n_due < n_talking for n_due, n_talking in n_due_per_call)

    for i, speaker in enumerate(SPEAKERS):
        clip = speaker.clip(speech)
        rows = mx.concatenate(streamed[i])
        assert together[i].n_tokens_emitted == alone[i].n_tokens_emitted == rows.shape[0]
        reference = prompt_rows(loaded, clip)
        assert rows.shape == reference.shape
        assert max_abs_diff(rows.astype(reference.dtype), reference) <= MAX_ABS_DIFF
        reference_f32 = tower_rows(loaded, clip)
        n_frames = min(rows.shape[0], reference_f32.shape[0])
        assert max_abs_diff(rows[:n_frames], reference_f32[:n_frames]) <= MAX_ABS_DIFF


def test_a_batch_of_one_equals_push(loaded, speech):
    alone = IncrementalAudioEncoder(loaded.model, loaded.processor)
    together = IncrementalAudioEncoder(loaded.model, loaded.processor)
    for piece in Speaker(offset_ms=400, n_samples=30_500, push_ms=180, join_round=0).pieces(speech):
        (rows,) = push_together([together], [piece])
        expected = alone.push(piece)
        # One encoder is never padded: its pass is the one push makes, so equal on any device.
        assert rows.shape == expected.shape
        assert mx.array_equal(rows, expected).item()
    assert mx.array_equal(together.finish(), alone.finish()).item()


def test_frame_encoders_pushed_together_equal_pushed_alone(unified, speech):
    speakers = SPEAKERS[:4]
    alone = [FrameAudioEncoder(unified.model, unified.processor) for _ in speakers]
    together = [FrameAudioEncoder(unified.model, unified.processor) for _ in speakers]
    for pieces in rounds(speakers, speech):
        talking = sorted(pieces)
        rows = push_together([together[i] for i in talking], [pieces[i][0] for i in talking])
        for i, together_rows in zip(talking, rows, strict=True):
            assert_same_rows(together_rows, alone[i].push(pieces[i][0]))
    for together_encoder, alone_encoder in zip(together, alone, strict=True):
        assert_same_rows(together_encoder.finish(), alone_encoder.finish())


def test_a_pass_refuses_what_it_cannot_encode_as_one(loaded, unified):
    first, second = (IncrementalAudioEncoder(loaded.model, loaded.processor) for _ in range(2))
    frame = FrameAudioEncoder(unified.model, unified.processor)
    samples = np.zeros(640, np.float32)
    with pytest.raises(ValueError, match="twice"):
        push_together([first, first], [samples, samples])
    with pytest.raises(ValueError, match="2 encoders but 1"):
        push_together([first, second], [samples])
    with pytest.raises(ValueError, match="of one kind"):
        push_together([first, frame], [samples, samples])
    assert push_together([], []) == []
