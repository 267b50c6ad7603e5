"""The session's effective configuration: applying `session.update` patches and stating the result."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from msgspec import UNSET

from ..audio.formats import AudioFormat
from ..engine.port import ToolChoice, ToolSpec
from ..protocol.client_events import SessionPatch, TranscriptionSpec, TurnDetectionSpec
from ..protocol.errors import ProtocolError, quote
from .tools import check_tool_choice, parse_tool_choice, parse_tools, tool_choice_to_wire, tools_to_wire
from .truncation import Truncation

MAX_OUTPUT_TOKENS_LIMIT = 4096

# semantic_vad has no model of its own here: it runs as server_vad with a silence wait per eagerness.
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 800, "auto": 800, "high": 500}

_TURN_DETECTION_RANGES = {
    "threshold": (0.0, 1.0),
    "prefix_padding_ms": (0, 10_000),
    "silence_duration_ms": (0, 10_000),
    "idle_timeout_ms": (1, 3_600_000),
}

_BETA_AUDIO_FORMATS = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}


@dataclass(frozen=True)
class TurnDetection:
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str = "auto"

    def patched(self, spec: TurnDetectionSpec) -> TurnDetection:
        if spec.type not in ("server_vad", "semantic_vad"):
            raise ProtocolError(
                "invalid_value",
                f"Unsupported turn_detection type {quote(spec.type)}; use server_vad or semantic_vad.",
                param="session.audio.input.turn_detection.type",
            )
        # A change of type starts from that type's defaults, as a fresh object on the wire does.
        base = self if spec.type == self.type else TurnDetection(type=spec.type)  # type: ignore[arg-type]
        changes = {
            f.name: getattr(spec, f.name)
            for f in dataclasses.fields(self)
            if f.name != "type" and getattr(spec, f.name, UNSET) is not UNSET
        }
        result = dataclasses.replace(base, **changes)
        for name, (low, high) in _TURN_DETECTION_RANGES.items():
            value = getattr(result, name)
            if value is not None:
                _check_range(name, value, low, high, param=f"session.audio.input.turn_detection.{name}")
        if result.eagerness not in SEMANTIC_SILENCE_MS:
            raise ProtocolError(
                "invalid_value",
                f"Unsupported eagerness {quote(result.eagerness)}.",
                param="session.audio.input.turn_detection.eagerness",
            )
        return result

    @property
    def effective_silence_ms(self) -> int:
        if self.type == "semantic_vad":
            return SEMANTIC_SILENCE_MS[self.eagerness]
        return self.silence_duration_ms

    def to_wire(self) -> dict[str, Any]:
        if self.type == "semantic_vad":
            return {
                "type": "semantic_vad",
                "eagerness": self.eagerness,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True)
class Transcription:
    """Input audio transcription by the loaded model; `model` is only echoed."""

    model: str = "gemma-4"
    language: str | None = None
    prompt: str | None = None

    @classmethod
    def from_spec(cls, spec: TranscriptionSpec) -> Transcription:
        # A transcription object replaces the one before it, as on OpenAI's API.
        values = {name: getattr(spec, name) for name in ("model", "language", "prompt")}
        present = {name: value for name, value in values.items() if value not in (UNSET, None)}
        return cls(**present)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"model": self.model}
        if self.language is not None:
            wire["language"] = self.language
        if self.prompt is not None:
            wire["prompt"] = self.prompt
        return wire


@dataclass(frozen=True)
class SessionSettings:
    model: str = "gemma-4"
    instructions: str = "You are a helpful assistant. Answer briefly."
    max_output_tokens: int = 1024
    temperature: float = 0.0
    input_format: AudioFormat = AudioFormat("audio/pcm", 24000)
    turn_detection: TurnDetection | None = TurnDetection()
    transcription: Transcription | None = None
    frames_max_per_turn: int = 1
    frames_min_interval_ms: int = 0
    truncation: Truncation = Truncation()
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True

    def patched(self, patch: SessionPatch) -> SessionSettings:
        """Only the fields present change; raises ProtocolError and leaves self untouched."""
        if patch.type is not UNSET and patch.type != "realtime":
            raise ProtocolError(
                "invalid_value",
                f"Session type {quote(patch.type)} is not supported; this server runs 'realtime' sessions.",
                param="session.type",
            )
        changes: dict[str, Any] = {}
        if patch.model is not UNSET:
            changes["model"] = patch.model
        if patch.instructions is not UNSET:
            changes["instructions"] = patch.instructions
        if patch.max_output_tokens is not UNSET:
            changes["max_output_tokens"] = parse_max_output_tokens(
                patch.max_output_tokens, "session.max_output_tokens"
            )
        if patch.temperature is not UNSET:
            _check_range("temperature", patch.temperature, 0.0, 2.0)
            changes["temperature"] = patch.temperature
        if patch.truncation is not UNSET:
            changes["truncation"] = Truncation.from_wire(patch.truncation)
        changes.update(self._audio_changes(patch))
        if patch.frames is not UNSET:
            if patch.frames.max_per_turn is not UNSET:
                _check_range("frames.max_per_turn", patch.frames.max_per_turn, 0, 8)
                changes["frames_max_per_turn"] = patch.frames.max_per_turn
            if patch.frames.min_interval_ms is not UNSET:
                _check_range("frames.min_interval_ms", patch.frames.min_interval_ms, 0, 60_000)
                changes["frames_min_interval_ms"] = patch.frames.min_interval_ms
        changes.update(self._tool_changes(patch))
        return dataclasses.replace(self, **changes)

    def _tool_changes(self, patch: SessionPatch) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if patch.tools is not UNSET:
            changes["tools"] = parse_tools(patch.tools, "session.tools")
        if patch.tool_choice is not UNSET:
            changes["tool_choice"] = parse_tool_choice(patch.tool_choice, "session.tool_choice")
        if patch.parallel_tool_calls is not UNSET:
            changes["parallel_tool_calls"] = patch.parallel_tool_calls
        choice = changes.get("tool_choice", self.tool_choice)
        # pipecat sends tool_choice "required" before its context's tools: a session may wait for
        # them; a response that needs a call without any tool is refused when it starts.
        if changes and choice != "required":
            check_tool_choice(choice, changes.get("tools", self.tools), "session.tool_choice")
        return changes

    def _audio_changes(self, patch: SessionPatch) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        audio_input = patch.audio.input if patch.audio is not UNSET else UNSET
        format_spec: Any = UNSET
        turn_spec: Any = patch.turn_detection
        if patch.input_audio_format is not UNSET:
            format_spec = _BETA_AUDIO_FORMATS.get(patch.input_audio_format)
            if format_spec is None:
                raise ProtocolError(
                    "invalid_value",
                    f"Unsupported input_audio_format {quote(patch.input_audio_format)}.",
                    param="session.input_audio_format",
                )
        if audio_input is not UNSET:
            if audio_input.format is not UNSET:
                format_spec = {"type": audio_input.format.type}
                if audio_input.format.rate is not UNSET:
                    format_spec["rate"] = audio_input.format.rate
            if audio_input.turn_detection is not UNSET:
                turn_spec = audio_input.turn_detection
        if format_spec is not UNSET:
            try:
                changes["input_format"] = AudioFormat.from_session(format_spec)
            except ValueError as exc:
                raise ProtocolError("invalid_value", str(exc), param="session.audio.input.format") from None
        changes.update(_transcription_changes(patch))
        if turn_spec is None:
            changes["turn_detection"] = None
        elif turn_spec is not UNSET:
            changes["turn_detection"] = (self.turn_detection or TurnDetection()).patched(turn_spec)
        return changes

    def to_wire(self, session_id: str) -> dict[str, Any]:
        """The session object as the SDK types it, stating only what is really in effect."""
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": ["text"],
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "audio": {
                "input": {
                    "format": self.input_format.to_session(),
                    "transcription": self.transcription.to_wire() if self.transcription else None,
                    "noise_reduction": None,
                    "turn_detection": self.turn_detection.to_wire() if self.turn_detection else None,
                },
            },
            "tools": tools_to_wire(self.tools),
            "tool_choice": tool_choice_to_wire(self.tool_choice),
            "parallel_tool_calls": self.parallel_tool_calls,
            "tracing": None,
            "truncation": self.truncation.to_wire(),
            "frames": {
                "max_per_turn": self.frames_max_per_turn,
                "min_interval_ms": self.frames_min_interval_ms,
            },
        }


def _transcription_changes(patch: SessionPatch) -> dict[str, Any]:
    spec: Any = patch.input_audio_transcription
    if patch.audio is not UNSET and patch.audio.input is not UNSET:
        if patch.audio.input.transcription is not UNSET:
            spec = patch.audio.input.transcription
    if spec is UNSET:
        return {}
    return {"transcription": None if spec is None else Transcription.from_spec(spec)}


def parse_max_output_tokens(value: int | str, param: str) -> int:
    if value == "inf":
        return MAX_OUTPUT_TOKENS_LIMIT
    assert isinstance(value, int)
    _check_range(param.rsplit(".", 1)[-1], value, 1, MAX_OUTPUT_TOKENS_LIMIT, param=param)
    return value


def _check_range(name: str, value: float, low: float, high: float, *, param: str | None = None) -> None:
    if not low <= value <= high:
        raise ProtocolError(
            "invalid_value",
            f"`{name}` must be between {low} and {high}; got {quote(value)}.",
            param=param or f"session.{name}",
        )
