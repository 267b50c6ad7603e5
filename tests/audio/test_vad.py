import numpy as np
import pytest

from realtime.audio.resample import resample_clip
from realtime.audio.vad import WebRtcVadDetector, aggressiveness_for_threshold


@pytest.mark.parametrize(
    ("threshold", "aggressiveness"),
    [(0.0, 0), (0.2, 0), (0.25, 1), (0.49, 1), (0.5, 2), (0.74, 2), (0.75, 3), (1.0, 3)],
)
def test_threshold_bands_map_onto_aggressiveness(threshold, aggressiveness):
    assert aggressiveness_for_threshold(threshold) == aggressiveness


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_thresholds_outside_zero_to_one_are_refused(threshold):
    with pytest.raises(ValueError, match="between 0 and 1"):
        aggressiveness_for_threshold(threshold)


@pytest.mark.parametrize(("aggressiveness", "frame_ms"), [(4, 20), (-1, 20), (2, 25)])
def test_webrtcvad_settings_it_cannot_run_are_refused(aggressiveness, frame_ms):
    with pytest.raises(ValueError, match="webrtcvad"):
        WebRtcVadDetector(aggressiveness, frame_ms)


@pytest.mark.parametrize(("frame_ms", "frame_n_samples"), [(10, 160), (20, 320), (30, 480)])
def test_frames_are_counted_at_16khz(frame_ms, frame_n_samples):
    detector = WebRtcVadDetector(2, frame_ms)
    assert detector.frame_n_samples == frame_n_samples
    assert detector.hangover_n_samples % frame_n_samples == 0


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_speech_is_speech_and_quiet_noise_is_not(speech_clips, aggressiveness):
    clip = speech_clips[0]
    speech = resample_clip((clip.samples * 16000).astype(np.int16), clip.rate_hz, 16000)
    noise = (np.random.default_rng(0).standard_normal(16000 * 2) * 100).astype(np.int16)
    detector = WebRtcVadDetector(aggressiveness)
    n = detector.frame_n_samples
    noise_votes = [detector.is_speech(noise[i : i + n]) for i in range(0, len(noise) - n + 1, n)]
    speech_votes = [detector.is_speech(speech[i : i + n]) for i in range(0, len(speech) - n + 1, n)]
    # The first few frames are webrtcvad settling on its noise model.
    assert not any(noise_votes[10:])
    assert np.mean(speech_votes) > 0.8


def test_hangover_matches_what_webrtcvad_does(speech_clips):
    # After the speech ends, the detector says "speech" for about its stated hangover.
    clip = speech_clips[0]
    speech = resample_clip((clip.samples * 16000).astype(np.int16), clip.rate_hz, 16000)
    noise = (np.random.default_rng(1).standard_normal(16000 * 4) * 100).astype(np.int16)
    samples = noise.copy()
    samples[16000 : 16000 + len(speech)] += speech
    for aggressiveness in range(4):
        detector = WebRtcVadDetector(aggressiveness)
        n = detector.frame_n_samples
        votes = [detector.is_speech(samples[i : i + n]) for i in range(0, len(samples) - n + 1, n)]
        last_voiced_end = (np.nonzero(votes)[0][-1] + 1) * n
        overrun = last_voiced_end - (16000 + len(speech))
        assert abs(overrun - detector.hangover_n_samples) <= n
