"""What the tests look at inside an MlxBackend: a session's cache, its stored replies, a rendered prompt.

One place knows the backend's private layout, so the production class carries no test-only methods.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from realtime.engine.conversation_cache import CacheSnapshot, ConversationCache
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import GenerationRequest
from realtime.engine.prompt import Key, Prompt, Reply


def session_cache(backend: MlxBackend, session_id: str) -> ConversationCache:
    return backend._session(session_id).cache


def snapshot(backend: MlxBackend, session_id: str) -> CacheSnapshot:
    return session_cache(backend, session_id).snapshot()


def restore(backend: MlxBackend, session_id: str, saved: CacheSnapshot) -> None:
    session_cache(backend, session_id).restore(saved)


def cached_keys(backend: MlxBackend, session_id: str) -> tuple[Key, ...]:
    return tuple(session_cache(backend, session_id).keys)


def reply(backend: MlxBackend, session_id: str, output_item_id: str) -> Reply:
    """The tokens and text of an answer, as the next turn will replay it."""
    return backend._session(session_id).replies[output_item_id]


def render_prompt(backend: MlxBackend, request: GenerationRequest) -> Prompt:
    """The ids and keys generate() would prefill for this request, media spans included."""
    replies = backend._session(request.session_id).replies
    return backend._renderer.render(request.instructions, request.turns, replies, request.declared_tools)


@contextmanager
def forwards(backend: MlxBackend) -> Iterator[list[str]]:
    """The language-model forwards a lone session's steps run, in order: "prefill" (a chunk), "prompt end"
    (a prompt's rest with its logits) and "decode" (one token)."""
    scheduler = backend._scheduler
    names = {"_prefill_together": "prefill", "_prefill_to_logits": "prompt end", "_step_alone": "decode"}
    originals = {attribute: getattr(scheduler, attribute) for attribute in names}
    kinds: list[str] = []

    def recorded(attribute):
        def forward(*args):
            kinds.append(names[attribute])
            return originals[attribute](*args)

        return forward

    for attribute in names:
        setattr(scheduler, attribute, recorded(attribute))
    try:
        yield kinds
    finally:
        for attribute, original in originals.items():
            setattr(scheduler, attribute, original)
