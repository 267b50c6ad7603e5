import functools

import pytest

from tests.audio.speech import SENTENCES, Timeline, render_timeline, synthesize
from tests.conftest import require_tool


@pytest.fixture(scope="session")
def speech_clips():
    require_tool("espeak-ng")
    return [synthesize(text) for text in SENTENCES]


@pytest.fixture(scope="session")
def make_timeline(speech_clips):
    @functools.cache
    def make(rate_hz: int, snr_db: float = 20.0, seed: int = 0) -> Timeline:
        return render_timeline(speech_clips, rate_hz, snr_db, seed)

    return make
