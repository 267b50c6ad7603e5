"""A generation request as an OpenAI chat-completions request: turns to messages, media to WAV and JPEG."""

from __future__ import annotations

import base64
import hashlib
import io
import wave
from collections.abc import Set
from dataclasses import dataclass, replace

import numpy as np

from ...audio.clip import split_clip
from ...http_api.openai_types import (
    AssistantMessage,
    ChatMessage,
    ChatRequest,
    FunctionCallBody,
    FunctionSpec,
    ImageUrl,
    ImageUrlContent,
    InputAudio,
    InputAudioContent,
    NamedFunction,
    NamedToolChoice,
    StreamOptions,
    SystemMessage,
    TextContent,
    ToolCallSpec,
    ToolDeclaration,
    ToolMessage,
    UserContent,
    UserMessage,
)
from ..gemma4.audio_encoder import MAX_CLIP_N_SAMPLES
from ..port import (
    ENGINE_SAMPLE_RATE_HZ,
    AudioPart,
    GenerationRequest,
    ImagePart,
    NamedTool,
    Part,
    TextPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Turn,
)

JPEG_QUALITY = 90


class UnsupportedContent(ValueError):
    """A conversation part this engine has no chat-completions shape for."""


@dataclass(frozen=True)
class ChatRequestPlan:
    body: ChatRequest
    # Media ids sent with their data in this request: once it succeeds, the engine holds them.
    sent_media_ids: frozenset[str]
    # True when some media went as a bare id, so an engine that lost it rejects the request.
    omitted_media: bool


def build_chat_request(
    request: GenerationRequest, model: str, *, media_ids: bool, known_media_ids: Set[str] = frozenset()
) -> ChatRequestPlan:
    """With `media_ids`, every media part carries a content-derived id, and media whose id is in
    `known_media_ids` is sent as the id alone."""
    builder = _MessageBuilder(media_ids, known_media_ids)
    messages: list[ChatMessage] = []
    if request.instructions:
        messages.append(SystemMessage(content=request.instructions))
    for turn in request.turns:
        messages += builder.messages(turn)
    tools = [_declaration(tool) for tool in request.declared_tools]
    body = ChatRequest(
        model=model,
        messages=messages,
        stream=True,
        stream_options=StreamOptions(include_usage=True),
        max_tokens=request.max_output_tokens,
        temperature=request.sampling.temperature,
        top_p=request.sampling.top_p,
        seed=request.sampling.seed,
        tools=tools or None,
        tool_choice=_tool_choice(request.tool_choice) if tools else None,
        parallel_tool_calls=None if not tools or request.parallel_tool_calls else False,
    )
    return ChatRequestPlan(body, frozenset(builder.sent), builder.omitted)


class _MessageBuilder:
    def __init__(self, media_ids: bool, known: Set[str]) -> None:
        self._media_ids = media_ids
        self._known = known
        self.sent: set[str] = set()
        self.omitted = False

    def messages(self, turn: Turn) -> list[ChatMessage]:
        if turn.role == "user":
            return [UserMessage(content=[content for part in turn.parts for content in self._contents(part)])]
        if turn.role == "tool":
            return [ToolMessage(tool_call_id=part.call_id, content=part.output) for part in _results(turn)]
        if turn.role == "assistant":
            return [_assistant_message(turn)]
        return [SystemMessage(content=_text_of(turn))]

    def _contents(self, part: Part) -> list[UserContent]:
        if isinstance(part, TextPart):
            return [TextContent(text=part.text)]
        if isinstance(part, AudioPart):
            # Serving engines cut Gemma 4 audio at 30 s rather than splitting it: send clips they hear whole.
            clips = split_clip(np.asarray(part.samples, dtype=np.float32), MAX_CLIP_N_SAMPLES)
            return [self._media(AudioPart(clip, f"{part.key}/{n}")) for n, clip in enumerate(clips)]
        if isinstance(part, ImagePart):
            return [self._media(part)]
        raise UnsupportedContent(f"the remote engine cannot send {type(part).__name__} yet")

    def _media(self, part: AudioPart | ImagePart) -> UserContent:
        media_id = media_id_of(part) if self._media_ids else None
        if media_id is not None and media_id in self._known:
            self.omitted = True
            if isinstance(part, AudioPart):
                return InputAudioContent(input_audio=None, uuid=media_id)
            return ImageUrlContent(image_url=None, uuid=media_id)
        if media_id is not None:
            self.sent.add(media_id)
        if isinstance(part, AudioPart):
            data = base64.b64encode(wav_bytes(part.samples)).decode("ascii")
            return InputAudioContent(input_audio=InputAudio(data=data, format="wav"), uuid=media_id)
        return ImageUrlContent(image_url=ImageUrl(url=jpeg_data_uri(part)), uuid=media_id)


def wav_bytes(samples: np.ndarray) -> bytes:
    """16-bit mono WAV at the engine rate: what every serving engine's audio loader reads."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(ENGINE_SAMPLE_RATE_HZ)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def jpeg_data_uri(part: ImagePart) -> str:
    buffer = io.BytesIO()
    part.image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def media_id_of(part: AudioPart | ImagePart) -> str:
    # From the content, not the part's key: keys are per conversation (a client may reuse an item id),
    # while an engine's media cache is shared by every session sending to it.
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(part, AudioPart):
        digest.update(np.ascontiguousarray(part.samples, dtype=np.float32).tobytes())
        return "audio-" + digest.hexdigest()
    image = part.image.convert("RGB")
    digest.update(f"{image.width}x{image.height}".encode())
    digest.update(image.tobytes())
    return "image-" + digest.hexdigest()


def _text_of(turn: Turn) -> str:
    if any(not isinstance(part, TextPart) for part in turn.parts):
        raise UnsupportedContent(f"the remote engine sends only text in {turn.role} turns")
    return "".join(part.text for part in turn.parts if isinstance(part, TextPart))


def _assistant_message(turn: Turn) -> AssistantMessage:
    calls = [part for part in turn.parts if isinstance(part, ToolCallPart)]
    text = _text_of(replace(turn, parts=tuple(p for p in turn.parts if not isinstance(p, ToolCallPart))))
    if not calls:
        return AssistantMessage(content=text)
    tool_calls = [ToolCallSpec(call.call_id, FunctionCallBody(call.name, call.arguments)) for call in calls]
    return AssistantMessage(content=text or None, tool_calls=tool_calls)


def _results(turn: Turn) -> list[ToolResultPart]:
    if any(not isinstance(part, ToolResultPart) for part in turn.parts):
        raise UnsupportedContent("the remote engine sends only tool results in tool turns")
    return [part for part in turn.parts if isinstance(part, ToolResultPart)]


def _declaration(tool: ToolSpec) -> ToolDeclaration:
    return ToolDeclaration(FunctionSpec(tool.name, tool.description or None, tool.parameters))


def _tool_choice(choice: ToolChoice) -> str | NamedToolChoice:
    return NamedToolChoice(NamedFunction(choice.name)) if isinstance(choice, NamedTool) else choice
