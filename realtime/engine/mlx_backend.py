"""The real backend: Gemma 4 through mlx-vlm, with a KV cache per session that grows turn by turn."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from PIL import Image

from .answer import AnswerPolicy, PromptEnd, Step, decode_answer
from .audio_rows import AudioRowsCache
from .conversation_cache import ConversationCache
from .gemma4.audio_encoder import AudioStreamEncoder, push_together, stream_encoder
from .gemma4.call_stream import Answer, ParsedCall
from .gemma4.chat_format import ChatTokens, PromptRenderer
from .gemma4.context import context_tokens as model_context_tokens
from .gemma4.language_model import DecodeBatch, Prefiller
from .gemma4.loading import LoadedModel, load_model
from .gemma4.media import MediaEncoder, MediaPart
from .gemma4.tokens import TOOL_TOKEN_IDS, token_rules
from .gemma4.tool_grammar import ToolCallConstraint, call_grammar, grammar_tokenizer
from .gemma4.transcription import transcription_generation
from .port import (
    ENGINE_SAMPLE_RATE_HZ,
    AudioPart,
    AudioTurnStart,
    EngineOutput,
    GenerationDone,
    GenerationRequest,
    ImagePart,
    StopReason,
    TextDelta,
    TextPart,
    ToolCall,
    TranscriptionRequest,
    Turn,
    Usage,
    context_overflow,
)
from .prefill import EmbeddingPiece, Piece, TokenPiece, take_tokens
from .prompt import Prompt, Reply
from .row_streams import row_streams
from .sampling import Sampler, suppression_mask
from .scheduler import StepScheduler, prefill_in_steps
from .turn_stream import TurnStream, render_opening

DEFAULT_PREFILL_CHUNK_TOKENS = 512
# mlx-vlm's default prefill step, for a prompt that no other session's work waits on.
DEFAULT_PREFILL_ALONE_TOKENS = 2048
# Applies when a request sets no limit: a model that never ends its turn must not hold the engine forever.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


def _never() -> bool:
    return False


@dataclass
class _Session:
    cache: ConversationCache
    replies: dict[str, Reply] = field(default_factory=dict)
    # Set while one of its requests is using the cache; a second one meanwhile gets a scratch cache.
    busy: bool = False
    # The user turn being prefilled while it is spoken, if any.
    stream: TurnStream | None = None


class MlxBackend:
    """Implements worker.Backend. Cheap to construct; `load()` (on the engine thread) does the work.

    Cancellation policy: a cancelled answer stays in the cache as what was said, up to its last token,
    so when the session keeps the truncated assistant item the next turn extends the cache without trimming.
    """

    def __init__(
        self,
        model: str | Path | LoadedModel,
        *,
        prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS,
        prefill_alone_tokens: int = DEFAULT_PREFILL_ALONE_TOKENS,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        context_tokens: int | None = None,
    ) -> None:
        self._source = model
        self.name = model.path.name if isinstance(model, LoadedModel) else Path(model).name
        self._prefill_chunk_tokens = prefill_chunk_tokens
        self._prefill_alone_tokens = prefill_alone_tokens
        self._max_output_tokens = max_output_tokens
        # None: the model's own context length, read on load. A smaller value bounds each session's cache.
        self.context_tokens = context_tokens
        self._sessions: dict[str, _Session] = {}
        self._audio_rows = AudioRowsCache()
        self.loaded: LoadedModel | None = None

    def load(self) -> None:
        source = self._source
        self.loaded = source if isinstance(source, LoadedModel) else load_model(Path(source))
        model, processor = self.loaded.model, self.loaded.processor
        self._media = MediaEncoder(model, processor, self.loaded.model_type)
        self._renderer = PromptRenderer(
            processor.tokenizer, ChatTokens.from_processor(processor), self._media.count_tokens
        )
        # The processor registers <|video|> itself when the tokenizer lacks it.
        video_id = getattr(processor, "video_token_id", None)
        self._rules = token_rules(model.config, extra_suppressed=[video_id] if video_id else [])
        vocab_size = model.config.text_config.vocab_size
        self._suppressed = suppression_mask(self._rules.suppressed_ids, vocab_size)
        # Without tools in the prompt no tool syntax may appear in an answer.
        without_tools = self._rules.suppressed_ids | TOOL_TOKEN_IDS
        self._suppressed_without_tools = suppression_mask(without_tools, vocab_size)
        self._vocab_size = vocab_size
        # About a second (more on a busy CPU): paid here, not by the first tool call, which would stall every
        # session on the engine thread.
        self._grammar_tokenizer = grammar_tokenizer(processor.tokenizer, vocab_size)
        self._prefiller = Prefiller(model)
        self._scheduler = StepScheduler(
            lambda caches: DecodeBatch(model, caches),
            self._prefiller.step,
            self._prefiller.logits,
            row_streams(mx.default_device()),
            self._prefiller.prefill,
            self._prefiller.to_logits,
            self._prefill_chunk_tokens,
            self._prefill_alone_tokens,
        )
        self._text_dtype = model.language_model.model.embed_tokens.weight.dtype
        self._unified = self.loaded.model_type == "gemma4_unified"
        model_tokens = model_context_tokens(model.config)
        self.context_tokens = min(self.context_tokens or model_tokens, model_tokens)
        self._warm_up()

    def generate(
        self, request: GenerationRequest, should_stop: Callable[[], bool]
    ) -> Iterator[EngineOutput | None]:
        session = self._session(request.session_id)
        in_session = request.use_session_cache and not session.busy
        cache = session.cache if in_session else self._new_cache()
        answer = Answer(self.loaded.processor.tokenizer, self._rules)
        prompt = self._renderer.render(
            request.instructions, request.turns, session.replies, request.declared_tools
        )
        if len(prompt.ids) >= self.context_tokens:
            if in_session:
                # The streamed turn will not be answered: the cache goes back to before it.
                self.abandon_audio_turn(request.session_id)
            yield context_overflow(request.response_id, _input_usage(prompt, 0), self.context_tokens)
            return
        if in_session:
            # Answers no longer in the conversation (deleted items) will not be replayed again.
            present = {turn.item_id for turn in request.turns}
            session.replies = {k: v for k, v in session.replies.items() if k in present}
            session.busy = True
        try:
            n_cached = None
            if in_session and session.stream is not None:
                n_cached = self._finish_stream(session, request, prompt)
            done = yield from self._answer(request, prompt, cache, answer, should_stop, n_cached)
        except Exception:
            # A forward that failed halfway may have written layers past the recorded keys.
            cache.clear()
            raise
        finally:
            # Before GenerationDone goes out: the worker may submit the next turn as soon as it sees it.
            if in_session:
                session.busy = False
                session.replies[request.output_item_id] = answer.reply()
        yield done

    def transcribe(
        self, request: TranscriptionRequest, should_stop: Callable[[], bool]
    ) -> Iterator[EngineOutput | None]:
        """An out-of-band answer to Gemma 4's ASR instruction over the turn's audio, on a scratch cache;
        clips the session's requests already encoded are not encoded again."""
        yield from self.generate(transcription_generation(request), should_stop)

    def drop_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._audio_rows.drop_session(session_id)

    def begin_audio_turn(self, start: AudioTurnStart) -> Iterator[None]:
        # A turn still open (committed without an answer) is rolled back like any other.
        self.abandon_audio_turn(start.session_id)
        if not self._media.has_audio:
            return
        session = self._session(start.session_id)
        opening = render_opening(self._renderer, start, session.replies)
        encoder = stream_encoder(self.loaded)
        session.stream = TurnStream(
            start, session.cache.snapshot(), encoder, len(opening.ids), self._text_dtype
        )
        with self._streamed_work(session):
            self._reuse_prefix(session.cache, opening)
            position = len(session.cache)
            pieces = yield from self._uncached_pieces(start.session_id, opening, position, _never)
            yield from self._prefill_chunks(session.cache, pieces or [], _never)

    def append_audio_turn(self, session_id: str, samples: np.ndarray) -> Iterator[None]:
        session = self._sessions.get(session_id)
        # No stream: a request that did not continue the turn has ended it; the rest of it is not needed.
        if session is None or session.stream is None:
            return
        stream = session.stream
        with self._streamed_work(session):
            # A slice of audio is encoded in one step, with every other session's due at that step; the
            # rows it made final are prefilled in the next.
            for pushed in stream.slices(samples):
                ticket = self._scheduler.together(_encode_together, (stream.encoder, pushed))
                yield from self._scheduler.end_of_unit()
                rows = stream.heard_rows(ticket.result())
                yield from self._prefill_chunks(session.cache, [rows], _never)

    def abandon_audio_turn(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None and session.stream is not None:
            session.cache.restore(session.stream.snapshot)
            session.stream = None

    @contextmanager
    def _streamed_work(self, session: _Session) -> Iterator[None]:
        try:
            yield
        except Exception:
            # A forward that failed halfway may have written layers past the recorded keys.
            session.cache.clear()
            session.stream = None
            raise

    def _finish_stream(
        self,
        session: _Session,
        request: GenerationRequest,
        prompt: Prompt,
    ) -> int | None:
        """Completes the streamed turn's encoding if the request continues it, else rolls the cache back to
        before it. Its last rows are prefilled with the rest of the prompt, in the same forward.

        Returns how many of the prompt's tokens the cache held on arrival when the turn was continued.
        """
        stream, session.stream = session.stream, None
        part = stream.continuation(request, prompt, session.cache.keys)
        if part is None:
            session.cache.restore(stream.snapshot)
            return None
        n_cached = len(session.cache)
        stream.finish(part)
        self._audio_rows.put(request.session_id, part.key, stream.rows())
        n_tokens = self._media.count_tokens(part)
        if stream.n_rows != n_tokens:
            raise ValueError(f"audio {part.key}: {stream.n_rows} streamed rows for {n_tokens} tokens")
        return n_cached

    def _prefill_chunks(
        self, cache: ConversationCache, pieces: list[Piece], should_stop: Callable[[], bool]
    ) -> Generator[None, None, bool]:
        return (yield from prefill_in_steps(self._scheduler, cache, pieces, should_stop))

    def _answer(
        self,
        request: GenerationRequest,
        prompt: Prompt,
        cache: ConversationCache,
        answer: Answer,
        should_stop: Callable[[], bool],
        n_cached_on_arrival: int | None,
    ) -> Generator[Step, None, GenerationDone]:
        n_cached = self._reuse_prefix(cache, prompt)
        # A streamed turn's audio counts as cached: it was prefilled before the request, while spoken.
        usage = _input_usage(prompt, n_cached if n_cached_on_arrival is None else n_cached_on_arrival)
        first = yield from self._prefill_prompt(request.session_id, prompt, cache, should_stop)
        reason: StopReason = "cancelled"
        if first is not None:
            # The answer also ends where the context does.
            limit = min(
                request.max_output_tokens or self._max_output_tokens, self.context_tokens - len(prompt.ids)
            )
            reason = yield from self._decode(request, first, cache, answer, should_stop, limit)
        usage = replace(usage, output_tokens=len(answer.token_ids))
        return GenerationDone(request.response_id, reason, usage)

    def _reuse_prefix(self, cache: ConversationCache, prompt: Prompt) -> int:
        # The prompt's last token always runs again: its logits start the answer and are not cached.
        n_keep = min(cache.common_prefix(prompt.keys), len(prompt.keys) - 1)
        if not cache.rewind(n_keep):
            cache.clear()
        return len(cache)

    def _prefill_prompt(
        self,
        session_id: str,
        prompt: Prompt,
        cache: ConversationCache,
        should_stop: Callable[[], bool],
    ) -> Generator[None, None, mx.array | PromptEnd | None]:
        """Feeds the prompt up to what starts the answer: the logits after the whole prompt (a
        gemma4_unified prompt with images), or the rest still to feed in the step that samples the first
        answer token (the last token, or a cached conversation's whole new turn); None if stopped."""
        pieces = yield from self._uncached_pieces(session_id, prompt, len(cache), should_stop)
        if pieces is None or should_stop():
            return None
        # A gemma4_unified prompt with images and no audio runs unchunked with bidirectional image blocks,
        # and one that mixes in audio stays causal (mlx-vlm's choice for quantized unified models).
        kinds = {p.kind for p in pieces if isinstance(p, EmbeddingPiece)}
        if self._unified and "image" in kinds and "audio" not in kinds:
            return self._prefiller.forward(cache, pieces, image_blocks=True)
        n_rest = sum(len(p) for p in pieces)
        # A new turn of a cached conversation (a streamed turn's tail, say) runs in one forward with its
        # logits: a forward less before the first word. A prompt that starts the cache is prefilled as
        # mlx-vlm's generate_step does, all but the last token in chunks and then the last one alone, so
        # its answer matches mlx-vlm's on any device.
        if len(cache) and n_rest <= self._scheduler.max_prompt_end_tokens:
            return PromptEnd(tuple(pieces))
        head, tail = take_tokens(pieces, n_rest - 1)
        if not (yield from self._prefill_chunks(cache, head, should_stop)) or should_stop():
            return None
        # The chat format ends every prompt with the generation prompt's text tokens: the tail is one.
        return PromptEnd(tuple(tail))

    def _uncached_pieces(
        self, session_id: str, prompt: Prompt, position: int, should_stop: Callable[[], bool]
    ) -> Generator[None, None, list[Piece] | None]:
        """The prompt from `position` on; each media item it reaches is encoded as one unit of work."""
        pieces: list[Piece] = []
        for span in prompt.media:
            end = span.start + span.n_tokens
            if end <= position or span.n_tokens == 0:
                continue
            if should_stop():
                return None
            rows = self._embedded(session_id, span.part, span.n_tokens)
            yield None
            start = max(span.start, position)
            pieces.append(TokenPiece(prompt.ids[position:start]))
            kind = "audio" if isinstance(span.part, AudioPart) else "image"
            pieces.append(EmbeddingPiece(prompt.keys[start:end], rows[start - span.start :], kind))
            position = end
        pieces.append(TokenPiece(prompt.ids[position:]))
        return [p for p in pieces if len(p)]

    def _embedded(self, session_id: str, part: MediaPart, n_tokens: int) -> mx.array:
        if not isinstance(part, AudioPart):
            return self._media.embed(part)
        rows = self._audio_rows.get(session_id, part.key, n_tokens)
        if rows is None:
            rows = self._media.embed(part)
            self._audio_rows.put(session_id, part.key, rows)
        return rows

    def _decode(
        self,
        request: GenerationRequest,
        start: mx.array | PromptEnd,
        cache: ConversationCache,
        answer: Answer,
        should_stop: Callable[[], bool],
        limit: int,
    ) -> Generator[Step, None, StopReason]:
        constraint = self._tool_constraint(request)
        sampler = Sampler(request.sampling, self._suppression(request), constraint)
        policy = AnswerPolicy(
            request.response_id,
            self._rules,
            limit,
            lambda added: self._output(request, answer, added),
            stop_after_call=not request.parallel_tool_calls,
        )
        return (
            yield from decode_answer(
                self._scheduler,
                start if isinstance(start, PromptEnd) else sampler(start),
                sampler,
                constraint,
                cache,
                answer,
                policy,
                should_stop,
            )
        )

    def _output(self, request: GenerationRequest, answer: Answer, added: str | ParsedCall) -> Step:
        if isinstance(added, ParsedCall):
            call_id = f"call_{secrets.token_hex(12)}"
            answer.call_ids.append(call_id)
            return ToolCall(request.response_id, call_id, added.name, added.arguments)
        return TextDelta(request.response_id, added) if added else None

    def _suppression(self, request: GenerationRequest) -> mx.array:
        return self._suppressed if request.declared_tools else self._suppressed_without_tools

    def _tool_constraint(self, request: GenerationRequest) -> ToolCallConstraint | None:
        if request.tool_choice in ("auto", "none") or not request.tools:
            return None
        grammar = call_grammar(request.tools, request.tool_choice, request.parallel_tool_calls)
        return ToolCallConstraint(self._grammar_tokenizer, grammar, self._vocab_size)

    def _session(self, session_id: str) -> _Session:
        if session_id not in self._sessions:
            self._sessions[session_id] = _Session(self._new_cache())
        return self._sessions[session_id]

    def _new_cache(self) -> ConversationCache:
        return ConversationCache(self.loaded.model.make_cache)

    def _warm_up(self) -> None:
        # The first run of each path compiles and allocates (seconds): pay it here, not in a first turn.
        parts: list[Any] = [TextPart("hello")]
        if self._media.has_audio:
            noise = np.random.default_rng(0).uniform(-0.1, 0.1, ENGINE_SAMPLE_RATE_HZ).astype(np.float32)
            parts.append(AudioPart(noise, key="warm-up-audio"))
        if self._media.has_vision:
            parts.append(ImagePart(Image.new("RGB", (96, 96), (128, 64, 32)), key="warm-up-image"))
        first = Turn("user", tuple(parts), "warm-up")
        # A second turn on the cached first one: a new turn's forward with its logits (a prompt end).
        for turns in ((first,), (first, Turn("user", (TextPart("and then?"),), "warm-up-2"))):
            request = GenerationRequest("\0warm-up", "warm-up", "warm-up", "", turns, max_output_tokens=2)
            for _ in self.generate(request, _never):
                pass
        self.drop_session(request.session_id)

    def finish_step(self) -> None:
        """Runs the work every unit since the last call queued: encoder pass, prefill chunks, decode."""
        self._scheduler.run()


def _encode_together(pushes: list[tuple[AudioStreamEncoder, np.ndarray]]) -> list[mx.array]:
    return push_together([encoder for encoder, _ in pushes], [samples for _, samples in pushes])


def _input_usage(prompt: Prompt, n_cached: int) -> Usage:
    n_audio = prompt.media_tokens(AudioPart)
    n_image = prompt.media_tokens(ImagePart)
    return Usage(
        input_text_tokens=len(prompt.ids) - n_audio - n_image,
        input_audio_tokens=n_audio,
        input_image_tokens=n_image,
        cached_tokens=n_cached,
    )
