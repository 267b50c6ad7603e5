"""Decode rows spread over CPU streams: contiguous even groups, one stream per usable core."""

from __future__ import annotations

import mlx.core as mx
import pytest

from realtime.engine import row_streams as rs


@pytest.mark.parametrize(
    ("n_rows", "n_streams", "groups"),
    [
        (1, 2, [[0]]),
        (4, 2, [[0, 1], [2, 3]]),
        (5, 2, [[0, 1], [2, 3, 4]]),
        (4, 3, [[0], [1], [2, 3]]),
        (2, 8, [[0], [1]]),
    ],
)
def test_rows_split_into_contiguous_even_groups(n_rows, n_streams, groups):
    streams = [mx.new_stream(mx.cpu) for _ in range(n_streams)]
    got = list(rs.row_groups(n_rows, streams))
    assert [list(rows) for _, rows in got] == groups
    assert [stream for stream, _ in got] == streams[: len(groups)]


def test_a_cpu_gets_one_stream_per_usable_core(monkeypatch):
    monkeypatch.setattr(rs, "_usable_cores", lambda: 3)
    streams = rs.row_streams(mx.Device(mx.cpu))
    assert len(streams) == 3 and len(set(streams)) == 3
    assert all(stream.device == mx.Device(mx.cpu) for stream in streams)
    assert streams[0] == mx.default_stream(mx.Device(mx.cpu))


def test_many_cores_stop_at_the_cap(monkeypatch):
    monkeypatch.setattr(rs, "_usable_cores", lambda: 64)
    assert len(rs.row_streams(mx.Device(mx.cpu))) == rs._MAX_CPU_STREAMS


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no GPU backend in this MLX build")
def test_a_gpu_keeps_its_default_stream():
    gpu = mx.Device(mx.DeviceType.gpu)
    assert rs.row_streams(gpu) == [mx.default_stream(gpu)]
