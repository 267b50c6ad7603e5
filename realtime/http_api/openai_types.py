"""OpenAI chat-completions wire types: the request we send upstream and accept, the chunks and answers."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

# Requests ---------------------------------------------------------------------------------------
# `uuid` follows vLLM: a stable media id, so a part whose media the engine has seen may carry no data.


class TextContent(Struct, tag_field="type", tag="text"):
    text: str


class ImageUrl(Struct, omit_defaults=True):
    url: str
    detail: str | None = None


class ImageUrlContent(Struct, tag_field="type", tag="image_url", omit_defaults=True):
    # Always on the wire, null when only the uuid is sent.
    image_url: ImageUrl | None
    uuid: str | None = None


class InputAudio(Struct):
    data: str
    format: str = "wav"


class InputAudioContent(Struct, tag_field="type", tag="input_audio", omit_defaults=True):
    input_audio: InputAudio | None
    uuid: str | None = None


UserContent = TextContent | ImageUrlContent | InputAudioContent


class SystemMessage(Struct, tag_field="role", tag="system"):
    content: str | list[TextContent]


class DeveloperMessage(Struct, tag_field="role", tag="developer"):
    content: str | list[TextContent]


class UserMessage(Struct, tag_field="role", tag="user"):
    content: str | list[UserContent]


class FunctionCallBody(Struct):
    name: str
    # JSON text of an object.
    arguments: str


class ToolCallSpec(Struct):
    id: str
    function: FunctionCallBody
    type: str = "function"


class AssistantMessage(Struct, tag_field="role", tag="assistant", omit_defaults=True):
    content: str | list[TextContent] | None = None
    tool_calls: list[ToolCallSpec] | None = None


class ToolMessage(Struct, tag_field="role", tag="tool"):
    tool_call_id: str
    content: str


ChatMessage = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage


class FunctionSpec(Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict | None = None


class ToolDeclaration(Struct):
    function: FunctionSpec
    type: str = "function"


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct):
    function: NamedFunction
    type: str = "function"


class StreamOptions(Struct, omit_defaults=True):
    include_usage: bool = False


class ChatRequest(Struct, omit_defaults=True):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int | None = None
    tools: list[ToolDeclaration] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


# Answers ----------------------------------------------------------------------------------------


class PromptTokensDetails(Struct):
    cached_tokens: int | None = 0
    audio_tokens: int | None = None


class ChatUsage(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class FunctionDelta(Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct):
    """A piece of a streamed call: the id and name come first, the arguments in pieces."""

    index: int = 0
    id: str | None = None
    function: FunctionDelta | None = None


class ChunkDelta(Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(Struct):
    delta: ChunkDelta
    index: int = 0
    finish_reason: str | None = None


class ChatChunk(Struct):
    choices: list[ChunkChoice]
    id: str = ""
    model: str = ""
    created: int = 0
    object: str = "chat.completion.chunk"
    usage: ChatUsage | None = None


class AnswerMessage(Struct):
    content: str | None
    role: str = "assistant"
    tool_calls: list[ToolCallSpec] | None = None


class AnswerChoice(Struct):
    message: AnswerMessage
    finish_reason: str
    index: int = 0


class ChatCompletion(Struct):
    id: str
    model: str
    created: int
    choices: list[AnswerChoice]
    usage: ChatUsage
    object: str = "chat.completion"


class ModelCard(Struct):
    id: str
    created: int = 0
    object: str = "model"
    owned_by: str = "mlx-realtime"


class ModelList(Struct):
    data: list[ModelCard]
    object: str = "list"


class ErrorDetail(Struct):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorBody(Struct):
    error: ErrorDetail


FinishReason = Literal["stop", "length"]
