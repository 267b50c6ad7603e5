"""Where the decode rows' output head and sampling run: on a CPU, spread over one MLX stream per core.

MLX runs a stream's operations one after another on one thread, and on its CPU backend the output head
over the whole vocabulary and the sampling over its logits cost about the same for every row: a batch on
one stream would use one core. Rows are independent there, so each stream takes a contiguous group of them.
A GPU runs a batch's rows together already: it keeps its one default stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import mlx.core as mx

# Measured on two cores only; more streams than decoding rows would sit idle, and batches rarely pass eight.
_MAX_CPU_STREAMS = 8


def row_streams(device: mx.Device) -> list[mx.Stream]:
    """The device's default stream first: a lone row stays where the forward before it ran."""
    if device.type != mx.DeviceType.cpu:
        return [mx.default_stream(device)]
    n_streams = min(_usable_cores(), _MAX_CPU_STREAMS)
    return [mx.default_stream(device), *(mx.new_stream(device) for _ in range(n_streams - 1))]


def row_groups(n_rows: int, streams: Sequence[mx.Stream]) -> Iterator[tuple[mx.Stream, range]]:
    """Contiguous groups of rows as even as can be, one stream each."""
    n_groups = min(n_rows, len(streams))
    for group in range(n_groups):
        yield streams[group], range(group * n_rows // n_groups, (group + 1) * n_rows // n_groups)


def _usable_cores() -> int:
    # The affinity mask, where there is one, is what a container or taskset leaves this process.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
