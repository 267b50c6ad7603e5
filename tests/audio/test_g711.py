import numpy as np

from realtime.audio import g711

ALL_CODES = np.arange(256, dtype=np.uint8)
ALL_INT16 = np.arange(-32768, 32768).astype(np.int16)


def test_ulaw_known_values():
    # ITU-T G.711 Table 2a, scaled to 16 bits: codes are inverted, 0xFF is +0 and 0x00 is -8031*4.
    decoded = g711.decode_ulaw(np.array([0xFF, 0x7F, 0x00, 0x80, 0xF0, 0xEF, 0x70], dtype=np.uint8))
    assert decoded.tolist() == [0, 0, -32124, 32124, 120, 132, -120]


def test_alaw_known_values():
    # ITU-T G.711 Table 1a, scaled to 16 bits: even bits inverted, a set sign bit is positive.
    decoded = g711.decode_alaw(np.array([0xD5, 0x55, 0xAA, 0x2A, 0xD4, 0xC5], dtype=np.uint8))
    assert decoded.tolist() == [8, -8, 32256, -32256, 24, 264]


def test_decode_tables_are_odd_and_monotonic_per_sign():
    for table, positive in ((g711.ULAW_DECODE, ALL_CODES >= 0x80), (g711.ALAW_DECODE, ALL_CODES >= 0x80)):
        assert table.dtype == np.int16
        assert sorted(table[positive].tolist()) == sorted((-table[~positive]).tolist())
    # μ-law magnitudes grow as the inverted code grows; A-law as the even-bit-flipped code grows.
    ulaw_positive = g711.ULAW_DECODE[0xFF:0x7F:-1]
    assert np.all(np.diff(ulaw_positive.astype(int)) > 0)
    alaw_positive = g711.ALAW_DECODE[np.arange(0x80, 0x100) ^ 0x55]
    assert np.all(np.diff(alaw_positive.astype(int)) > 0)


def test_encoding_a_decoded_code_gives_the_code_back():
    assert np.array_equal(g711.encode_alaw(g711.ALAW_DECODE), ALL_CODES)
    ulaw_codes = g711.encode_ulaw(g711.ULAW_DECODE)
    # μ-law has two zeros, +0 (0xFF) and -0 (0x7F); zero encodes as +0.
    assert np.array_equal(ulaw_codes[ALL_CODES != 0x7F], ALL_CODES[ALL_CODES != 0x7F])
    assert ulaw_codes[0x7F] == 0xFF


def test_encoding_picks_the_segment_that_holds_the_sample():
    # Quantization error is at most half a step of the segment, plus one for the 14/13-bit truncation.
    for encode, decode in ((g711.encode_ulaw, g711.decode_ulaw), (g711.encode_alaw, g711.decode_alaw)):
        error = np.abs(decode(encode(ALL_INT16)).astype(int) - ALL_INT16.astype(int))
        magnitude = np.abs(ALL_INT16.astype(int))
        assert np.all(error <= np.maximum(magnitude // 16, 16) + 8)
        assert error[magnitude < 64].max() <= 8
