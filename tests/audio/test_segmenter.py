import numpy as np
import pytest

from realtime.audio.formats import AudioFormat
from realtime.audio.segmenter import (
    IdleTimeout,
    Segmenter,
    SpeechStarted,
    SpeechStopped,
    VadSettings,
)
from realtime.audio.vad import WebRtcVadDetector
from tests.audio.speech import N_SAMPLES_PER_MS_16K, paired_turns, run_pipeline, wire_bytes

TOLERANCE_N_SAMPLES = 60 * N_SAMPLES_PER_MS_16K
FORMATS = [
    AudioFormat("audio/pcm", 24000),
    AudioFormat("audio/pcm", 16000),
    AudioFormat("audio/pcm", 44100),
    AudioFormat("audio/pcmu", 8000),
    AudioFormat("audio/pcma", 8000),
]
CHUNK_DURATIONS_MS = {"1s": 1000, "20ms": 20, "7ms": 7}


def _format_id(fmt: AudioFormat) -> str:
    return f"{fmt.kind.removeprefix('audio/')}{fmt.rate_hz}"


@pytest.mark.parametrize("chunk", CHUNK_DURATIONS_MS, ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=_format_id)
def test_each_spoken_sentence_is_one_turn_with_accurate_bounds(make_timeline, fmt, chunk):
    timeline = make_timeline(fmt.rate_hz)
    # An odd byte count for PCM, so samples are split across chunks too.
    chunk_n_bytes = CHUNK_DURATIONS_MS[chunk] * fmt.rate_hz // 1000 * fmt.n_bytes_per_sample + 1
    settings = VadSettings()
    _, events = run_pipeline(wire_bytes(timeline, fmt), fmt, [chunk_n_bytes], settings)

    turns = paired_turns(events, settings.prefix_padding_ms)
    assert len(turns) == len(timeline.turns_16k)
    for (start, end), (true_start, true_end) in zip(turns, timeline.turns_16k, strict=True):
        assert abs(start - true_start) <= TOLERANCE_N_SAMPLES, (start / 16, true_start / 16)
        assert abs(end - true_end) <= TOLERANCE_N_SAMPLES, (end / 16, true_end / 16)


@pytest.mark.parametrize("fmt", [FORMATS[1], FORMATS[3]], ids=_format_id)
def test_one_byte_chunks_match_one_second_chunks(make_timeline, fmt):
    # The first sentence and its stop, about 3.7 s; one byte at a time is slow beyond that.
    data = wire_bytes(make_timeline(fmt.rate_hz), fmt)[: fmt.rate_hz * fmt.n_bytes_per_sample * 4]
    settings = VadSettings()
    samples_1s, events_1s = run_pipeline(data, fmt, [fmt.rate_hz * fmt.n_bytes_per_sample], settings)
    samples_1b, events_1b = run_pipeline(data, fmt, [1], settings)
    assert len(events_1s) == 2
    assert events_1b == events_1s
    assert np.array_equal(samples_1b, samples_1s)


def test_turn_start_is_padded_and_clamped_to_the_stream_start(make_timeline):
    fmt = FORMATS[1]
    timeline = make_timeline(fmt.rate_hz)
    data = wire_bytes(timeline, fmt)
    true_start = timeline.turns_16k[0][0]
    assert true_start == 1000 * N_SAMPLES_PER_MS_16K
    for padding_ms, expected_floor in ((0, None), (300, None), (2000, 0)):
        _, events = run_pipeline(data, fmt, [640], VadSettings(prefix_padding_ms=padding_ms))
        started = events[0]
        assert isinstance(started, SpeechStarted)
        if expected_floor is None:
            padded_truth = true_start - padding_ms * N_SAMPLES_PER_MS_16K
            assert abs(started.start_sample - padded_truth) <= TOLERANCE_N_SAMPLES
        else:
            assert started.start_sample == expected_floor


def test_idle_timeout_fires_once_per_silence_after_start_and_after_each_stop(make_timeline):
    timeline = make_timeline(16000)
    fmt = FORMATS[1]
    idle_timeout_ms = 800
    settings = VadSettings(idle_timeout_ms=idle_timeout_ms)
    _, events = run_pipeline(wire_bytes(timeline, fmt), fmt, [640], settings)

    idle_n_samples = idle_timeout_ms * N_SAMPLES_PER_MS_16K
    expected_idle = [IdleTimeout(idle_n_samples, 0)]
    expected_idle += [
        IdleTimeout(e.end_sample + idle_n_samples, e.end_sample)
        for e in events
        if isinstance(e, SpeechStopped)
    ]
    assert [e for e in events if isinstance(e, IdleTimeout)] == expected_idle
    # Each timeout comes in its silence: after the stop it follows, before the next start.
    kinds = [type(e) for e in events]
    n_turns = len(timeline.turns_16k)
    assert kinds == [IdleTimeout] + [SpeechStarted, SpeechStopped, IdleTimeout] * n_turns


def test_idle_timeout_rearms_only_when_asked():
    # White noise alone: nothing is speech, so only the timeout speaks.
    noise = (np.random.default_rng(3).standard_normal(16000 * 6) * 300).astype(np.int16)
    segmenter = Segmenter(VadSettings(idle_timeout_ms=1000), WebRtcVadDetector(2))
    assert segmenter.push(noise[:48000]) == [IdleTimeout(16000, 0)]
    segmenter.arm_idle_timeout()
    assert segmenter.push(noise[48000:]) == [IdleTimeout(64000, 48000)]
    segmenter.arm_idle_timeout()
    segmenter.disarm_idle_timeout()
    assert segmenter.push(noise) == []


def test_no_idle_timeout_without_the_setting(make_timeline):
    timeline = make_timeline(16000)
    fmt = FORMATS[1]
    _, events = run_pipeline(wire_bytes(timeline, fmt), fmt, [640], VadSettings())
    assert not any(isinstance(e, IdleTimeout) for e in events)


def _burst_in_noise(speech_clips, burst_ms: int) -> np.ndarray:
    clip = speech_clips[2]  # "Nobody knew ...": voiced from its first window
    burst = (clip.samples[: clip.rate_hz * burst_ms // 1000] * 0.5 * 32768).astype(np.int16)
    from realtime.audio.resample import resample_clip

    burst_16k = resample_clip(burst, clip.rate_hz, 16000)
    samples = (np.random.default_rng(5).standard_normal(16000 * 3) * 100).astype(np.int16)
    samples[16000 : 16000 + len(burst_16k)] += burst_16k
    return samples


@pytest.mark.parametrize("burst_ms", [40, 60])
def test_short_bursts_of_speech_open_no_turn(speech_clips, burst_ms):
    segmenter = Segmenter(VadSettings(), WebRtcVadDetector(2))
    assert segmenter.push(_burst_in_noise(speech_clips, burst_ms)) == []


def test_a_short_word_opens_a_turn(speech_clips):
    segmenter = Segmenter(VadSettings(), WebRtcVadDetector(2))
    events = segmenter.push(_burst_in_noise(speech_clips, 300))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_a_click_opens_no_turn():
    samples = (np.random.default_rng(6).standard_normal(16000 * 3) * 100).astype(np.int16)
    samples[20000:20040] = 30000
    segmenter = Segmenter(VadSettings(), WebRtcVadDetector(2))
    assert segmenter.push(samples) == []


class ScriptedDetector:
    """Votes from a script, one character per 20 ms frame ("1" speech, "." not): exact hysteresis."""

    frame_n_samples = 320

    def __init__(self, script: str, hangover_n_frames: int = 0) -> None:
        self._votes = iter(script)
        self.hangover_n_samples = hangover_n_frames * self.frame_n_samples

    def is_speech(self, frame: np.ndarray) -> bool:
        assert len(frame) == self.frame_n_samples
        return next(self._votes) == "1"


def _run_script(script: str, settings: VadSettings, hangover_n_frames: int = 0, chunk: int = 320):
    segmenter = Segmenter(settings, ScriptedDetector(script, hangover_n_frames))
    silence = np.zeros(len(script) * 320, dtype=np.int16)
    events = []
    for i in range(0, len(silence), chunk):
        events += segmenter.push(silence[i : i + chunk])
    return segmenter, events


FRAME = 320
NO_PADDING = VadSettings(prefix_padding_ms=0, silence_duration_ms=100, min_speech_ms=100)


def test_speech_starts_after_min_speech_of_consecutive_frames():
    # Four speech frames (80 ms) twice, then five (100 ms): only the last run opens a turn.
    _, events = _run_script("..1111.1111..11111" + "." * 10, NO_PADDING)
    assert events == [SpeechStarted(13 * FRAME), SpeechStopped(18 * FRAME)]


def test_hangover_is_counted_out_of_runs_and_turn_ends():
    # With a 3-frame hangover a run needs 5 + 3 frames; the turn ends 3 frames before the run does.
    script = "..1111111" + "." * 20 + "11111111" + "." * 10
    _, events = _run_script(script, NO_PADDING, hangover_n_frames=3)
    assert events == [SpeechStarted(29 * FRAME), SpeechStopped(34 * FRAME)]


def test_stop_waits_for_silence_duration_after_the_end_of_speech():
    settings = VadSettings(prefix_padding_ms=0, silence_duration_ms=200, min_speech_ms=20)
    # A 180 ms pause does not end the turn; a 200 ms one does, counted from the end of speech.
    segmenter, events = _run_script("11" + "." * 9 + "11" + "." * 9, settings)
    assert events == [SpeechStarted(0)]
    assert segmenter.in_speech
    segmenter, events = _run_script("11" + "." * 10 + "1", settings)
    assert events == [SpeechStarted(0), SpeechStopped(2 * FRAME), SpeechStarted(12 * FRAME)]


def test_any_push_sizes_give_the_same_events():
    script = "...111111....1111111111....." + "." * 30 + "1111111111" + "." * 30
    settings = VadSettings(prefix_padding_ms=40, silence_duration_ms=300, idle_timeout_ms=500)
    _, reference = _run_script(script, settings, hangover_n_frames=2)
    assert reference == [
        SpeechStarted(13 * FRAME - 640),
        SpeechStopped(21 * FRAME),
        IdleTimeout(21 * FRAME + 8000, 21 * FRAME),
        SpeechStarted(58 * FRAME - 640),
        SpeechStopped(66 * FRAME),
        IdleTimeout(66 * FRAME + 8000, 66 * FRAME),
    ]
    for chunk in (1, 7, 319, 321, 5000):
        assert _run_script(script, settings, hangover_n_frames=2, chunk=chunk)[1] == reference


def test_reset_forgets_the_turn_and_bounds_the_next_start():
    settings = VadSettings(prefix_padding_ms=300, silence_duration_ms=100, min_speech_ms=40)
    segmenter = Segmenter(settings, ScriptedDetector("." * 30 + "111" + "111" + "....."))
    silence = np.zeros(FRAME, dtype=np.int16)
    events = [e for _ in range(33) for e in segmenter.push(silence)]
    assert events == [SpeechStarted(30 * FRAME - 300 * 16)]
    segmenter.push(silence[:100])  # reset mid-frame: the frame grid stays where it was
    segmenter.reset()
    assert not segmenter.in_speech and segmenter.n_samples_seen == 33 * FRAME + 100
    # The rest of frame 33 and frames 34-35 are speech, then five frames of silence.
    events = segmenter.push(np.zeros(220 + 2 * FRAME + 5 * FRAME, dtype=np.int16))
    assert events == [SpeechStarted(33 * FRAME + 100), SpeechStopped(36 * FRAME)]


def test_earliest_start_sample_bounds_every_later_start():
    settings = VadSettings(prefix_padding_ms=100, silence_duration_ms=100, min_speech_ms=60)
    segmenter = Segmenter(settings, ScriptedDetector("." * 20 + "11" + "." + "111" + "....."))
    silence = np.zeros(FRAME, dtype=np.int16)
    bounds = []
    for _ in range(26):
        bounds.append(segmenter.earliest_start_sample)
        segmenter.push(silence[:200])
        segmenter.push(silence[200:])
    assert bounds[:21] == [max(0, i * FRAME - 1600) for i in range(21)]
    assert bounds[22] == 20 * FRAME - 1600  # a run is pending: it may still become the turn
    assert bounds[23] == 23 * FRAME - 1600  # that run died; the next may start here
    assert bounds[24] == 23 * FRAME - 1600


def test_idle_timeout_waits_on_a_pending_run_and_fires_if_it_dies():
    settings = VadSettings(prefix_padding_ms=0, min_speech_ms=100, idle_timeout_ms=200)
    # The timeout falls due at frame 10 while a run is pending; the run becomes speech: no timeout.
    _, events = _run_script("." * 8 + "11111", settings)
    assert events == [SpeechStarted(8 * FRAME)]
    # The same run dies after two frames: the timeout, due at 200 ms, is told once it has.
    _, events = _run_script("." * 8 + "11" + "....", settings)
    assert events == [IdleTimeout(10 * FRAME, 0)]


def test_speech_disarms_the_idle_timeout_even_if_the_turn_is_reset():
    settings = VadSettings(prefix_padding_ms=0, min_speech_ms=20, idle_timeout_ms=200)
    segmenter = Segmenter(settings, ScriptedDetector("1" + "." * 40))
    silence = np.zeros(FRAME, dtype=np.int16)
    assert segmenter.push(silence) == [SpeechStarted(0)]
    segmenter.reset()
    assert segmenter.push(np.zeros(30 * FRAME, dtype=np.int16)) == []
    segmenter.arm_idle_timeout()
    assert segmenter.push(np.zeros(10 * FRAME, dtype=np.int16)) == [IdleTimeout(41 * FRAME, 31 * FRAME)]
