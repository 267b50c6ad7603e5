"""One conversation's KV cache and the keys of what it holds, with exact snapshots for rolling back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from .prompt import Key


def _detached(array: mx.array | None) -> mx.array | None:
    # A new array object: MLX's `cache.keys[...] = x` rebinds the object it is called on, so a snapshot
    # holding the cache's own object would change with it. The new object shares the buffer until then.
    return None if array is None else mx.array(array)


@dataclass(frozen=True)
class CacheSnapshot:
    keys: tuple[Key, ...]
    # Per layer: (keys, values) and the layer's meta state (offsets of a rotating window).
    layers: tuple[tuple[tuple[mx.array | None, mx.array | None], Any], ...]


class ConversationCache:
    """Invariant: `keys` lists exactly what the layers hold, in order; every prefill keeps it so."""

    def __init__(self, make_layers: Callable[[], list[Any]]) -> None:
        self._make_layers = make_layers
        self.layers = make_layers()
        self.keys: list[Key] = []

    def __len__(self) -> int:
        return len(self.keys)

    def common_prefix(self, keys: Sequence[Key]) -> int:
        n = min(len(self.keys), len(keys))
        for i in range(n):
            if self.keys[i] != keys[i]:
                return i
        return n

    def clear(self) -> None:
        self.layers = self._make_layers()
        self.keys = []

    def rewind(self, n_keep: int) -> bool:
        """Drop everything after the first n_keep keys; False (cache unchanged) when a layer cannot.

        A rotating sliding-window layer cannot once it has wrapped: the dropped tokens overwrote older ones.
        """
        n_drop = len(self.keys) - n_keep
        if n_drop <= 0:
            return True
        if not all(layer.is_trimmable() for layer in self.layers):
            return False
        for layer in self.layers:
            layer.trim(n_drop)
        del self.keys[n_keep:]
        return True

    def snapshot(self) -> CacheSnapshot:
        layers = tuple(
            ((_detached(k), _detached(v)), layer.meta_state)
            for layer in self.layers
            for k, v in (layer.state,)
        )
        return CacheSnapshot(tuple(self.keys), layers)

    def restore(self, snapshot: CacheSnapshot) -> None:
        if len(snapshot.layers) != len(self.layers):
            raise ValueError("the snapshot is of another model's cache")
        for layer, ((k, v), meta) in zip(self.layers, snapshot.layers, strict=True):
            layer.state = (_detached(k), _detached(v))
            layer.meta_state = meta
        self.keys = list(snapshot.keys)
