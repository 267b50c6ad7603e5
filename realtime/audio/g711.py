"""G.711 μ-law and A-law as lookup tables, built once from the ITU-T G.711 segment definitions."""

from __future__ import annotations

import numpy as np

# Segment end points of the biased magnitude (μ-law, 14-bit) and of the magnitude (A-law, 13-bit).
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _ulaw_decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # μ-law codes are sent with every bit inverted
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55  # A-law codes are sent with the even bits inverted
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    step = (mantissa << 4) + 8
    magnitude = np.where(exponent == 0, step, (step + 0x100) << np.maximum(exponent - 1, 0))
    # In A-law a set sign bit means positive.
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _all_int16() -> np.ndarray:
    # Indexed by the sample's bit pattern as uint16, so encoding is one take() per chunk.
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _pack(segment: np.ndarray, quantized: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # Past the last segment the code saturates at the largest magnitude.
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | (quantized & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _ulaw_encode_table() -> np.ndarray:
    sample = _all_int16() >> 2
    mask = np.where(sample < 0, 0x7F, 0xFF)
    biased = np.minimum(np.abs(sample), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, biased)
    return _pack(segment, biased >> (segment + 1), mask)


def _alaw_encode_table() -> np.ndarray:
    sample = _all_int16() >> 3
    mask = np.where(sample >= 0, 0xD5, 0x55)
    magnitude = np.where(sample >= 0, sample, -sample - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude)
    return _pack(segment, magnitude >> np.maximum(segment, 1), mask)


ULAW_DECODE = _ulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()
ULAW_ENCODE = _ulaw_encode_table()
ALAW_ENCODE = _alaw_encode_table()


def decode_ulaw(codes: np.ndarray) -> np.ndarray:
    return ULAW_DECODE[codes]


def decode_alaw(codes: np.ndarray) -> np.ndarray:
    return ALAW_DECODE[codes]


def encode_ulaw(samples: np.ndarray) -> np.ndarray:
    return ULAW_ENCODE[samples.view(np.uint16)]


def encode_alaw(samples: np.ndarray) -> np.ndarray:
    return ALAW_ENCODE[samples.view(np.uint16)]
