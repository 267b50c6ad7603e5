"""The sans-I/O session core: client events and engine outputs in, server events and engine commands out.

Theory of operation
-------------------
A Session is one realtime connection's state, and nothing else: it never touches a socket, a thread
or a clock. The transport feeds it two kinds of input and drains two kinds of output:

    receive_message(raw, now_ms)  ─┐                     ┌─► server events (to encode and send)
                                   ├─► Session state ────┤
    receive_engine_output(output) ─┘                     └─► engine commands (StartGeneration, Cancel…)

Audio time is counted in 16 kHz samples since the session started (`audio_start_ms` and friends
come from it); `now_ms` is only used to space camera frames. Every client event is handled
completely before the next: decode (codec) → validate → change state → queue events. A client
mistake raises ProtocolError anywhere below and becomes one `error` event; the state is unchanged
and the session goes on.

Audio turns. `input_audio_buffer.append` decodes and resamples the chunk (AudioInput), and the VAD
segmenter may answer with speech started / stopped. Speech start names the future user item,
pins the camera frames current at that moment, and, if a response is streaming and
`interrupt_response` is on, cancels it (barge-in). Speech stop takes the turn's audio out of the
buffer, commits it as a user item (frames first, then audio) and, with `create_response`, starts a
response — or queues it until the streaming one has ended.

Responses. At most one response runs at a time. Starting one emits `response.created` and sends
StartGeneration with the whole conversation as engine turns (the engine's prompt cache makes
resending it cheap), with the tools and tool_choice in effect. Output items open as the engine's
outputs arrive: the first text delta opens the message (item, then its empty text part), each
ToolCall is one function_call item, opened and closed at once (a message still open closes first).
Output items sit in the conversation where the response began. A function_call_output the client
sends must answer a call the conversation holds; the next response carries it as a tool turn. A
cancel only asks the engine to stop: the response ends when the engine says so, with the text and
calls it really produced and its usage, so what the client saw, what the conversation holds and
what the engine's cache holds always agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from msgspec import UNSET

from ..audio.formats import pcm16_to_float32
from ..audio.segmenter import IdleTimeout, SpeechStarted, SpeechStopped
from ..engine.port import (
    AbandonAudioTurn,
    AppendAudioTurn,
    AudioTurnStart,
    BeginAudioTurn,
    CancelGeneration,
    CloseSession,
    EngineCommand,
    EngineOutput,
    GenerationDone,
    GenerationRequest,
    SamplingSettings,
    StartGeneration,
    TextDelta,
    ToolCall,
)
from ..protocol import client_events as ce
from ..protocol import server_events as se
from ..protocol.codec import decode_client_event
from ..protocol.errors import ProtocolError
from ..protocol.ids import IdFactory
from ..vision.frames import FrameBuffer
from ..vision.images import DecodedImage, ImageLimits
from .audio_input import AudioInput, DetectorFactory, samples_to_ms, webrtc_detector
from .content import audio_key, check_call_item, decode_image_param, image_part, parse_item, to_turn
from .context_window import ContextWindow
from .conversation import ROOT, Content, Conversation, Item
from .response import Response
from .settings import SessionSettings, parse_max_output_tokens
from .tools import check_tool_choice, parse_tool_choice, parse_tools
from .transcription import Transcriber

log = logging.getLogger(__name__)

# OpenAI refuses to commit less than 100 ms of audio.
MIN_COMMIT_MS = 100


def _no_events(item: Item) -> list[se.ServerEvent]:
    return []


@dataclass(frozen=True)
class SessionLimits:
    max_buffer_ms: int = 10 * 60 * 1000
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    # The engine's context (EngineHealth.context_tokens): conversations are truncated to fit it.
    context_tokens: int | None = None


class Session:
    def __init__(
        self,
        session_id: str,
        settings: SessionSettings,
        *,
        ids: IdFactory | None = None,
        limits: SessionLimits = SessionLimits(),
        detector_factory: DetectorFactory = webrtc_detector,
        stream_turns: bool = True,
    ) -> None:
        self.id = session_id
        # Streaming prefill: the engine hears a turn while it is spoken (engine.port.AudioTurnStart).
        self._stream_turns = stream_turns
        self._streaming = False
        self._stream_fed_until = 0
        self.settings = settings
        self._ids = ids or IdFactory()
        self._limits = limits
        self.conversation = Conversation()
        self.conversation_id = self._ids.new("conv")
        self._window = ContextWindow(limits.context_tokens)
        # What the running response's request carried of the conversation, for learning token costs.
        self._window_sent: list[Item] | None = None
        self._audio = AudioInput(
            settings.input_format,
            settings.turn_detection,
            max_buffer_ms=limits.max_buffer_ms,
            detector_factory=detector_factory,
        )
        self._frames = FrameBuffer(max(1, settings.frames_max_per_turn), settings.frames_min_interval_ms)
        self._response: Response | None = None
        self._output_after: str | None = ROOT
        self._response_queued = False
        self._transcriber = Transcriber(session_id, self._ids)
        self._speech_item_id: str | None = None
        self._events: list[se.ServerEvent] = []
        self._commands: list[EngineCommand] = []
        self._now_ms = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            ce.SessionUpdate: self._on_session_update,
            ce.InputAudioBufferAppend: self._on_audio_append,
            ce.InputAudioBufferCommit: self._on_audio_commit,
            ce.InputAudioBufferClear: self._on_audio_clear,
            ce.InputImageBufferAppend: self._on_image_append,
            ce.ConversationItemCreate: self._on_item_create,
            ce.ConversationItemRetrieve: self._on_item_retrieve,
            ce.ConversationItemTruncate: self._on_item_truncate,
            ce.ConversationItemDelete: self._on_item_delete,
            ce.ResponseCreate: self._on_response_create,
            ce.ResponseCancel: self._on_response_cancel,
            ce.OutputAudioBufferClear: self._on_output_audio_clear,
        }

    # Inputs -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._emit(se.SessionCreated(session=self.settings.to_wire(self.id)))

    def receive_message(self, raw: str | bytes, now_ms: int = 0) -> None:
        self._now_ms = now_ms
        event_id = None
        try:
            event = decode_client_event(raw)
            event_id = event.event_id
            self._handlers[type(event)](event)
        except ProtocolError as exc:
            # Integrators debugging a client find what was refused in the server's log too.
            log.info("session %s refused a client event: %s (param %s)", self.id, exc.code, exc.param)
            self._emit_error(exc.for_event(event_id))
        except Exception:  # noqa: BLE001 - a bug in one event must not end the session
            log.exception("session %s failed to handle an event", self.id)
            self._emit_error(
                ProtocolError(
                    "internal_error",
                    "The server failed to handle this event.",
                    event_id=event_id,
                    error_type="server_error",
                )
            )

    def refuse_message(self, error: ProtocolError) -> None:
        """The transport did not hand a client message over (a server limit): the client still hears why."""
        self._emit_error(error)

    def receive_engine_output(self, output: EngineOutput) -> None:
        if self._transcriber.owns(output):
            self._on_transcription_output(output)
            return
        response = self._response
        if response is None or output.response_id != response.id:
            return
        try:
            if isinstance(output, TextDelta):
                self._emit_all(response.text_delta(output.text))
            elif isinstance(output, ToolCall):
                self._emit_all(response.tool_call(output))
            elif isinstance(output, GenerationDone):
                self._finish_response(response, output)
        except Exception:  # noqa: BLE001 - a bug here must not end the session
            log.exception("session %s failed to handle an engine output", self.id)
            if isinstance(output, GenerationDone):
                self._response = None
            self._emit_error(
                ProtocolError(
                    "internal_error",
                    "The server failed to handle the engine's output.",
                    error_type="server_error",
                )
            )

    def close(self) -> None:
        """The connection is gone: stop any generation still running for it and free the engine's state."""
        if self._response is not None:
            self._commands.append(CancelGeneration(self._response.id))
        # Transcriptions not yet sent never will be; those running end with the session.
        self._transcriber.release()
        self._commands.append(CloseSession(self.id))

    def drain(self) -> tuple[list[se.ServerEvent], list[EngineCommand]]:
        if self._response is None or self._response.outputs:
            self._commands += self._transcriber.release()
        events, commands = self._events, self._commands
        self._events, self._commands = [], []
        return events, commands

    @property
    def audio_received_ms(self) -> int:
        """Client audio decoded so far, on the session's sample clock (read by the transport's metrics)."""
        return samples_to_ms(self._audio.end_sample)

    # Session ------------------------------------------------------------------------------------

    def _on_session_update(self, event: ce.SessionUpdate) -> None:
        self.settings = self.settings.patched(event.session)
        if self._audio.reconfigure(self.settings.input_format, self.settings.turn_detection):
            # The VAD itself changed and starts afresh: a turn in progress is gone.
            self._drop_open_turn()
        self._frames.reconfigure(
            max(1, self.settings.frames_max_per_turn), self.settings.frames_min_interval_ms
        )
        self._emit(se.SessionUpdated(session=self.settings.to_wire(self.id)))

    # Input audio and frames ---------------------------------------------------------------------

    def _on_audio_append(self, event: ce.InputAudioBufferAppend) -> None:
        for segment in self._audio.append(event.audio):
            if isinstance(segment, SpeechStarted):
                self._on_speech_started(samples_to_ms(segment.start_sample))
            elif isinstance(segment, SpeechStopped):
                self._on_speech_stopped(segment)
            else:
                self._on_idle_timeout(segment)
        self._feed_stream()

    def _on_speech_started(self, audio_start_ms: int) -> None:
        self._speech_item_id = self._ids.item()
        self._frames.mark(self._now_ms)
        self._emit(
            se.InputAudioBufferSpeechStarted(audio_start_ms=audio_start_ms, item_id=self._speech_item_id)
        )
        detection = self.settings.turn_detection
        if self._response is not None and detection is not None and detection.interrupt_response:
            self._cancel_response("turn_detected")
            # The user talks on: the next stop asks for one response covering everything said.
            self._response_queued = False
        self._begin_stream()

    def _on_speech_stopped(self, stopped: SpeechStopped) -> None:
        item_id = self._speech_item_id or self._ids.item()
        audio_end_ms = samples_to_ms(stopped.end_sample)
        self._emit(se.InputAudioBufferSpeechStopped(audio_end_ms=audio_end_ms, item_id=item_id))
        # The turn keeps its trailing silence up to where the stop was decided: exactly what was streamed.
        self._commit_audio(item_id, self._audio.take_turn(stopped.detected_sample), self._turn_images())
        detection = self.settings.turn_detection
        if detection is not None and detection.create_response:
            self._request_response()

    def _on_idle_timeout(self, timeout: IdleTimeout) -> None:
        # As OpenAI does: the silence is committed and the model is prompted to carry on.
        item_id = self._ids.item()
        self._emit(
            se.InputAudioBufferTimeoutTriggered(
                audio_start_ms=samples_to_ms(timeout.since_sample),
                audio_end_ms=samples_to_ms(timeout.at_sample),
                item_id=item_id,
            )
        )
        self._commit_audio(item_id, self._audio.take_all(), self._turn_images())
        self._request_response()

    def _on_audio_commit(self, event: ce.InputAudioBufferCommit) -> None:
        n_buffered_ms = samples_to_ms(self._audio.n_buffered_samples)
        if n_buffered_ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {n_buffered_ms}ms of audio.",
            )
        item_id = self._speech_item_id or self._ids.item()
        self._commit_audio(item_id, self._audio.take_all(), self._turn_images())

    def _on_audio_clear(self, event: ce.InputAudioBufferClear) -> None:
        self._audio.clear()
        self._drop_open_turn()
        self._emit(se.InputAudioBufferCleared())

    def _drop_open_turn(self) -> None:
        """Forget a turn that will not be committed: its stream, its item id, its frozen frames."""
        self._end_stream(abandon=True)
        self._speech_item_id = None
        self._frames.unmark()

    def _turn_images(self) -> list[DecodedImage]:
        """The frames that join the open turn: those current at speech start, else the latest."""
        n_frames = self.settings.frames_max_per_turn
        if not n_frames:
            return []
        mark_ms = self._frames.mark_ms
        frames = self._frames.latest() if mark_ms is None else self._frames.frames_at(mark_ms)
        return frames[-n_frames:]

    def _commit_audio(self, item_id: str, audio: np.ndarray, images: list[DecodedImage]) -> None:
        content = [Content("input_image", image=image) for image in images]
        item = Item(id=item_id, role="user", content=[*content, Content("input_audio", audio=audio)])
        self._emit(se.InputAudioBufferCommitted(previous_item_id=self.conversation.last_id, item_id=item_id))
        transcription = self.settings.transcription
        # With a transcription coming, the item is done once its transcript is in.
        self._add_item(item, done=transcription is None)
        if transcription is not None:
            self._transcriber.request(item, transcription)
        self._end_stream(abandon=False)
        self._speech_item_id = None
        self._frames.unmark()

    # Streaming prefill --------------------------------------------------------------------------

    def _begin_stream(self) -> None:
        # Not while an answer is still being written: the conversation the turn follows is not final yet.
        if (
            not self._stream_turns
            or self._streaming
            or self._response is not None
            or not self._speech_item_id
        ):
            return
        images = self._turn_images()
        start = AudioTurnStart(
            session_id=self.id,
            instructions=self.settings.instructions,
            turns=tuple(to_turn(item) for item in self._window_for_stream()),
            item_id=self._speech_item_id,
            images=tuple(image_part(image) for image in images),
            audio_key=audio_key(self._speech_item_id, len(images)),
            tools=() if self.settings.tool_choice == "none" else self.settings.tools,
        )
        self._commands.append(BeginAudioTurn(start))
        self._streaming = True
        self._stream_fed_until = 0
        self._feed_stream()

    def _feed_stream(self) -> None:
        if not self._streaming:
            return
        samples = self._audio.turn_audio_since(self._stream_fed_until)
        if len(samples):
            self._commands.append(AppendAudioTurn(self.id, pcm16_to_float32(samples)))
            self._stream_fed_until = self._audio.end_sample

    def _end_stream(self, *, abandon: bool) -> None:
        """A committed turn hands its stream to the coming request; a dropped one rolls it back."""
        if self._streaming and abandon:
            self._commands.append(AbandonAudioTurn(self.id))
        self._streaming = False

    def _on_image_append(self, event: ce.InputImageBufferAppend) -> None:
        # Frames the interval would drop are not even decoded: a 30 fps stream costs nothing extra.
        if self._frames.would_keep(self._now_ms):
            frame = decode_image_param(event.image, self._limits.image_limits, "image")
            self._frames.offer(frame, self._now_ms)

    def _on_output_audio_clear(self, event: ce.OutputAudioBufferClear) -> None:
        raise ProtocolError(
            "unsupported_event",
            "output_audio_buffer.clear is for WebRTC and SIP sessions; this session sends no audio.",
            param="type",
        )

    # Conversation -------------------------------------------------------------------------------

    def _on_item_create(self, event: ce.ConversationItemCreate) -> None:
        item_id = event.item.id or self._ids.item()
        item = parse_item(event.item, item_id, self.settings.input_format, self._limits.image_limits, "item")
        check_call_item(item, list(self.conversation), "item.call_id")
        self._add_item(item, event.previous_item_id)

    def _add_item(self, item: Item, previous_item_id: str | None = None, *, done: bool = True) -> None:
        previous = self.conversation.add(item, previous_item_id)
        wire = item.to_wire()
        self._emit(se.ConversationItemAdded(previous_item_id=previous, item=wire))
        if done:
            self._emit(se.ConversationItemDone(previous_item_id=previous, item=wire))

    def _on_transcription_output(self, output: EngineOutput) -> None:
        events, finished = self._transcriber.on_output(output)
        for event in events:
            self._emit(event)
        if finished is not None and self.conversation.find(finished.id) is not None:
            previous = self.conversation.previous_id(finished.id)
            self._emit(se.ConversationItemDone(previous_item_id=previous, item=finished.to_wire()))

    def _on_item_retrieve(self, event: ce.ConversationItemRetrieve) -> None:
        item = self.conversation.get(event.item_id, "item_retrieve_invalid_item_id")
        self._emit(se.ConversationItemRetrieved(item=item.to_wire(self.settings.input_format)))

    def _on_item_truncate(self, event: ce.ConversationItemTruncate) -> None:
        item = self.conversation.get(event.item_id, "item_truncate_invalid_item_id")
        if item.role != "assistant":
            raise ProtocolError("invalid_value", "Only assistant messages can be truncated.", param="item_id")
        if not 0 <= event.content_index < max(1, len(item.content)) or event.audio_end_ms < 0:
            raise ProtocolError(
                "invalid_value",
                "content_index or audio_end_ms is out of range.",
                param="content_index",
            )
        # Answers here are text only: there is no played-out audio to cut, so the text stays whole.
        self._emit(
            se.ConversationItemTruncated(
                item_id=item.id, content_index=event.content_index, audio_end_ms=event.audio_end_ms
            )
        )

    def _on_item_delete(self, event: ce.ConversationItemDelete) -> None:
        self.conversation.delete(event.item_id)
        self._window.forget(event.item_id)
        self._emit(se.ConversationItemDeleted(item_id=event.item_id))

    # Responses ----------------------------------------------------------------------------------

    def _on_response_create(self, event: ce.ResponseCreate) -> None:
        if self._response is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        self._start_response(event.response or ce.ResponseSpec())

    def _on_response_cancel(self, event: ce.ResponseCancel) -> None:
        response = self._response
        if response is None or (event.response_id and event.response_id != response.id):
            raise ProtocolError(
                "response_cancel_not_active",
                "Cancellation failed: no active response found.",
                param="response_id" if event.response_id else None,
            )
        self._cancel_response("client_cancelled")

    def _request_response(self) -> None:
        if self._response is None:
            self._start_response(ce.ResponseSpec())
        else:
            self._response_queued = True

    def _cancel_response(self, reason: str) -> None:
        response = self._response
        if response is not None and response.cancel_reason is None:
            response.cancel_reason = reason
            self._commands.append(CancelGeneration(response.id))

    def _start_response(self, spec: ce.ResponseSpec) -> None:
        in_conversation = spec.conversation in (UNSET, "auto")
        if not in_conversation and spec.conversation != "none":
            raise ProtocolError(
                "invalid_value",
                "`conversation` must be 'auto' or 'none'.",
                param="response.conversation",
            )
        tool_settings = self._response_tools(spec)
        max_tokens = self.settings.max_output_tokens
        if spec.max_output_tokens is not UNSET:
            max_tokens = parse_max_output_tokens(spec.max_output_tokens, "response.max_output_tokens")
        if spec.input is UNSET:
            items = self._visible_items(max_tokens)
            # Learned only from requests whose instructions and tools are the session's own.
            self._window_sent = items if spec.instructions is UNSET and spec.tools is UNSET else None
        else:
            items, self._window_sent = self._response_input(spec), None
        turns = tuple(to_turn(item) for item in items)
        response = Response(
            id=self._ids.response(),
            first_item_id=self._ids.item(),
            new_item_id=self._ids.item,
            conversation_id=self.conversation_id if in_conversation else None,
            max_output_tokens=max_tokens,
            metadata=spec.metadata or None,
            item_added=self._output_item_added if in_conversation else _no_events,
            item_done=self._output_item_done if in_conversation else _no_events,
        )
        temperature = self.settings.temperature if spec.temperature is UNSET else spec.temperature
        request = GenerationRequest(
            session_id=self.id,
            response_id=response.id,
            output_item_id=response.first_item_id,
            instructions=self.settings.instructions if spec.instructions is UNSET else spec.instructions,
            turns=turns,
            max_output_tokens=max_tokens,
            sampling=SamplingSettings(temperature=temperature),
            use_session_cache=in_conversation,
            **tool_settings,
        )
        self._response = response
        # Output items sit where the response began, even if the user spoke meanwhile.
        self._output_after = self.conversation.last_id or ROOT
        self._audio.disarm_idle_timeout()
        self._emit(se.ResponseCreated(response=response.to_wire("in_progress")))
        self._commands.append(StartGeneration(request))

    def _visible_items(self, max_output_tokens: int, upcoming_tokens: int = 0) -> list[Item]:
        return self._window.visible(
            list(self.conversation), self.settings.truncation, max_output_tokens, upcoming_tokens
        )

    def _window_for_stream(self) -> list[Item]:
        # Room for the turn being spoken too: a window move then happens now, its prefill overlapping the
        # speech, rather than when the user stops and waits for the answer.
        upcoming = self._window.upcoming_turn_tokens
        return self._visible_items(self.settings.max_output_tokens, upcoming)

    def _response_tools(self, spec: ce.ResponseSpec) -> dict[str, Any]:
        """The GenerationRequest's tool fields: the session's, overridden by the response's."""
        tools = self.settings.tools
        if spec.tools is not UNSET:
            tools = parse_tools(spec.tools, "response.tools")
        choice = self.settings.tool_choice
        if spec.tool_choice is not UNSET:
            choice = parse_tool_choice(spec.tool_choice, "response.tool_choice")
        check_tool_choice(choice, tools, "response.tool_choice")
        parallel = self.settings.parallel_tool_calls
        if spec.parallel_tool_calls is not UNSET:
            parallel = spec.parallel_tool_calls
        return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}

    def _output_item_added(self, item: Item) -> list[se.ServerEvent]:
        after = self._output_after
        if after != ROOT and self.conversation.find(after) is None:
            after = None
        previous = self.conversation.add(item, after)
        self._output_after = item.id
        return [se.ConversationItemAdded(previous_item_id=previous, item=item.to_wire())]

    def _output_item_done(self, item: Item) -> list[se.ServerEvent]:
        # The client may have deleted the item while it was being written.
        if self.conversation.find(item.id) is None:
            return []
        previous = self.conversation.previous_id(item.id)
        return [se.ConversationItemDone(previous_item_id=previous, item=item.to_wire())]

    def _response_input(self, spec: ce.ResponseSpec) -> list[Item]:
        items: list[Item] = []
        for index, item_spec in enumerate(spec.input):
            param = f"response.input[{index}]"
            if item_spec.type == "item_reference":
                items.append(self.conversation.get(item_spec.id or "", "item_reference_not_found"))
                continue
            item_id = item_spec.id or self._ids.item()
            item = parse_item(
                item_spec, item_id, self.settings.input_format, self._limits.image_limits, param
            )
            check_call_item(item, [*self.conversation, *items], f"{param}.call_id")
            items.append(item)
        return items

    def _finish_response(self, response: Response, done: GenerationDone) -> None:
        closing, wire = response.finish(done)
        if self._window_sent is not None:
            self._window.learn(self._window_sent, done.usage)
            self._window_sent = None
        if response.conversation_id is not None:
            # The engine replays a response's tokens under its first output item.
            self._window.record_answer(response.first_item_id, done.usage.output_tokens)
        self._emit_all(closing)
        self._emit(se.ResponseDone(response=wire))
        self._response = None
        if self._response_queued:
            self._response_queued = False
            self._start_response(ce.ResponseSpec())
        else:
            # OpenAI counts the idle timeout from the end of the answer, not from the end of speech.
            self._audio.arm_idle_timeout()
            self._begin_stream()

    # Output -------------------------------------------------------------------------------------

    def _emit(self, event: se.ServerEvent) -> None:
        event.event_id = self._ids.event()
        self._events.append(event)

    def _emit_all(self, events: list[se.ServerEvent]) -> None:
        for event in events:
            self._emit(event)

    def _emit_error(self, error: ProtocolError) -> None:
        detail = se.ErrorDetail(
            type=error.error_type,
            code=error.code,
            message=error.message,
            param=error.param,
            event_id=error.event_id,
        )
        self._emit(se.Error(error=detail))
