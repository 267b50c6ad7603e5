import base64
import io

import pytest
from PIL import Image

from realtime.vision.frames import FrameBuffer
from realtime.vision.images import DecodedImage, ImageLimits, decode_image

FPS = 30


def frame(index: int) -> DecodedImage:
    # Each frame's colour encodes its index, so a test can tell frames apart after decoding.
    png = io.BytesIO()
    Image.new("RGB", (4, 3), (index % 256, index // 256, 7)).save(png, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    return decode_image(uri, ImageLimits())


def index_of(decoded: DecodedImage) -> int:
    red, green, _ = decoded.image.getpixel((0, 0))
    return red + 256 * green


def indices(frames: list[DecodedImage]) -> list[int]:
    return [index_of(f) for f in frames]


def at_ms(index: int) -> int:
    return index * 1000 // FPS


STREAM = [frame(index) for index in range(10 * FPS)]


def test_marked_frame_survives_a_long_utterance_in_bounded_memory():
    # Speech starts at 2010 ms, between frame 60 (2000 ms) and frame 61 (2033 ms).
    buffer = FrameBuffer(max_frames=1)
    for index, decoded in enumerate(STREAM):
        if buffer.would_keep(at_ms(index)):
            buffer.offer(decoded, at_ms(index))
        if index == 60:
            buffer.mark(2010)
        assert buffer.n_frames_held <= 1
    assert indices(buffer.frames_at(2010)) == [60]
    assert indices(buffer.latest()) == [60]
    buffer.unmark()
    buffer.offer(STREAM[299], at_ms(299))
    assert indices(buffer.latest()) == [299]


def test_mark_keeps_max_frames_current_at_that_moment():
    buffer = FrameBuffer(max_frames=3)
    for index, decoded in enumerate(STREAM):
        buffer.offer(decoded, at_ms(index))
        if index == 60:
            buffer.mark(2000)
        assert buffer.n_frames_held <= 3
    assert indices(buffer.frames_at(2000)) == [58, 59, 60]
    assert indices(buffer.latest()) == [58, 59, 60]


def test_frames_arriving_up_to_the_marked_moment_are_still_taken():
    buffer = FrameBuffer(max_frames=2)
    buffer.mark(at_ms(5))
    for index in range(12):
        buffer.offer(STREAM[index], at_ms(index))
    assert indices(buffer.frames_at(at_ms(5))) == [4, 5]


def test_mark_before_any_frame_keeps_the_first_to_arrive():
    buffer = FrameBuffer(max_frames=1)
    buffer.mark(0)
    for index in range(100, 200):
        buffer.offer(STREAM[index], at_ms(index))
        assert buffer.n_frames_held <= 1
    assert indices(buffer.frames_at(0)) == [100]


def test_min_interval_drops_frames_without_needing_them_decoded():
    buffer = FrameBuffer(max_frames=4, min_interval_ms=100)
    kept_ms = []
    for index in range(FPS):
        if buffer.would_keep(at_ms(index)):
            assert buffer.would_keep(at_ms(index))  # asking does not change the answer
            assert buffer.offer(STREAM[index], at_ms(index))
            kept_ms.append(at_ms(index))
        else:
            assert not buffer.offer(STREAM[index], at_ms(index))
    assert kept_ms == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert [at_ms(i) for i in indices(buffer.latest())] == [600, 700, 800, 900]


def test_time_going_backwards_is_dropped():
    buffer = FrameBuffer(max_frames=3)
    assert buffer.offer(STREAM[0], 500)
    assert not buffer.offer(STREAM[1], 499)
    assert buffer.offer(STREAM[2], 500)
    assert indices(buffer.latest()) == [0, 2]


def test_frames_at_picks_the_frames_current_at_a_moment():
    buffer = FrameBuffer(max_frames=2)
    assert buffer.frames_at(0) == []
    for index in (1, 2, 3):
        buffer.offer(STREAM[index], 100 * index)
    assert indices(buffer.frames_at(250)) == [2]
    assert indices(buffer.frames_at(300)) == [2, 3]
    assert indices(buffer.frames_at(50)) == [2]  # nothing that old: the earliest held


def test_reconfigure_keeps_the_newest_frames_and_the_interval_clock():
    buffer = FrameBuffer(max_frames=3)
    for index in range(5):
        buffer.offer(STREAM[index], 10 * index)
    buffer.reconfigure(max_frames=1, min_interval_ms=50)
    assert indices(buffer.latest()) == [4]
    assert not buffer.would_keep(89)
    assert buffer.would_keep(90)
    buffer.reconfigure(max_frames=2, min_interval_ms=0)
    buffer.offer(STREAM[5], 50)
    buffer.offer(STREAM[6], 60)
    assert indices(buffer.latest()) == [5, 6]
    with pytest.raises(ValueError):
        buffer.reconfigure(max_frames=0, min_interval_ms=0)
    with pytest.raises(ValueError):
        FrameBuffer(min_interval_ms=-1)


def test_clear_forgets_frames_mark_and_interval_clock():
    buffer = FrameBuffer(max_frames=1, min_interval_ms=1000)
    buffer.offer(STREAM[0], 0)
    buffer.mark(0)
    buffer.clear()
    assert (buffer.n_frames_held, buffer.mark_ms, buffer.latest()) == (0, None, [])
    assert buffer.would_keep(1)
