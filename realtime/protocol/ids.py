"""Identifiers in OpenAI's shapes (`event_…`, `item_…`, `resp_…`), from an injectable random source."""

from __future__ import annotations

import random
import string

_ALPHABET = string.ascii_letters + string.digits


class IdFactory:
    def __init__(self, rng: random.Random | None = None) -> None:
        # SystemRandom by default: ids must not be guessable across sessions.
        self._rng = rng or random.SystemRandom()

    def new(self, prefix: str, n_chars: int = 22) -> str:
        return prefix + "_" + "".join(self._rng.choices(_ALPHABET, k=n_chars))

    def event(self) -> str:
        return self.new("event")

    def item(self) -> str:
        return self.new("item")

    def response(self) -> str:
        return self.new("resp")
