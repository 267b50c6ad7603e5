"""pipecat's OpenAIRealtimeLLMService, unchanged, in a minimal pipeline pointed at the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InputImageRawFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    ProposedUserStartedSpeakingFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner

from tests.clients.conftest import (
    ANSWER_CAP_TOKENS,
    RATE_HZ,
    TIMEOUT_S,
    TOOL_CALL_CAP_TOKENS,
    spoken_turn,
)

pytestmark = pytest.mark.usefixtures("server_errors")
FRAME_MS = 20


class Recorder(FrameProcessor):
    """Records text and errors going either way; `answered` is set at the end of the first response."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.errors: list[ErrorFrame] = []
        self.heard_speech = False
        self.transcripts: list[str] = []
        self.transcribed = asyncio.Event()
        self.answered = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.text.append(frame.text)
        elif isinstance(frame, ErrorFrame):
            self.errors.append(frame)
        elif isinstance(frame, TranscriptionFrame):
            self.transcripts.append(frame.text)
            self.transcribed.set()
        elif isinstance(frame, ProposedUserStartedSpeakingFrame):
            self.heard_speech = True
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.answered.set()
        await self.push_frame(frame, direction)


@pytest.fixture
def loguru_errors():
    """pipecat logs through loguru: a server event it cannot parse kills its receive loop with an error."""
    records: list[str] = []
    sink = logger.add(lambda message: records.append(str(message)), level="ERROR")
    yield records
    logger.remove(sink)


class AssistantItems(list):
    """Assistant items as the service's `on_conversation_item_updated` handlers get them: once from
    conversation.item.done, once from response.done's output."""

    def __init__(self) -> None:
        super().__init__()
        self.reported_twice = asyncio.Event()
        self.user_parts: list[str] = []  # content part types of the user items the server echoed


def realtime_service(server, **session_properties) -> tuple[OpenAIRealtimeLLMService, AssistantItems]:
    properties = events.SessionProperties(
        output_modalities=["text"],
        max_output_tokens=session_properties.pop("max_output_tokens", ANSWER_CAP_TOKENS),
        **session_properties,
        audio=events.AudioConfiguration(
            input=events.AudioInput(transcription=events.InputAudioTranscription())
        ),
    )
    service = OpenAIRealtimeLLMService(
        api_key="unused",
        base_url=server.ws_url,
        settings=OpenAIRealtimeLLMService.Settings(model="gemma-4", session_properties=properties),
    )
    items = AssistantItems()

    @service.event_handler("on_conversation_item_created")
    async def on_item_created(service, item_id, item):
        if item.role == "user":
            items.user_parts += [part.type for part in item.content or []]

    @service.event_handler("on_conversation_item_updated")
    async def on_item_updated(service, item_id, item):
        if item is not None and item.role == "assistant":
            items.append(item)
            if len(items) == 2:
                items.reported_twice.set()

    return service, items


async def run_pipeline(
    service: OpenAIRealtimeLLMService,
    frames: list[Frame],
    until: Callable[[Recorder, Recorder], list[asyncio.Event]],
) -> tuple[Recorder, Recorder]:
    """Runs [upstream recorder, service, downstream recorder] until every event `until` names is set."""
    upstream, downstream = Recorder(), Recorder()
    worker = PipelineWorker(Pipeline([upstream, service, downstream]))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await worker.queue_frames(frames)
        for event in until(upstream, downstream):
            await asyncio.wait_for(event.wait(), TIMEOUT_S)
    finally:
        await worker.cancel()
        await asyncio.wait_for(running, TIMEOUT_S)
    return upstream, downstream


async def run_until_answered(
    service: OpenAIRealtimeLLMService,
    items: AssistantItems,
    frames: list[Frame],
    *,
    transcribed: bool = False,
) -> tuple[Recorder, Recorder]:
    """Until the answer is in (and, if asked, the user's transcript, which pipecat sends upstream)."""

    def until(upstream: Recorder, downstream: Recorder) -> list[asyncio.Event]:
        return [downstream.answered, items.reported_twice] + ([upstream.transcribed] if transcribed else [])

    return await run_pipeline(service, frames, until)


def assert_clean_answer(
    upstream: Recorder, downstream: Recorder, items: list, loguru_errors: list[str]
) -> None:
    assert not upstream.errors and not downstream.errors and not loguru_errors
    text = "".join(downstream.text)
    # response.done's output item, as pipecat hands it on: its status follows the response's.
    item = items[-1]
    assert item.status == "completed"
    assert text and item.content[0].text == text


async def test_a_text_context_gets_an_answer(server, loguru_errors):
    service, items = realtime_service(server)
    context = LLMContext(messages=[{"role": "user", "content": "Hello there!"}])
    upstream, downstream = await run_until_answered(service, items, [LLMContextFrame(context)])
    assert_clean_answer(upstream, downstream, items, loguru_errors)


async def test_audio_frames_with_server_vad_get_an_answer(server, loguru_errors):
    service, items = realtime_service(server)
    audio = spoken_turn("Please tell me a short story.")
    frame_n_bytes = 2 * RATE_HZ * FRAME_MS // 1000
    frames = [
        InputAudioRawFrame(audio=audio[start : start + frame_n_bytes], sample_rate=RATE_HZ, num_channels=1)
        for start in range(0, len(audio) - frame_n_bytes + 1, frame_n_bytes)
    ]
    upstream, downstream = await run_until_answered(service, items, frames, transcribed=True)
    assert_clean_answer(upstream, downstream, items, loguru_errors)
    assert upstream.heard_speech or downstream.heard_speech
    assert upstream.transcripts and upstream.transcripts[0]


async def test_a_camera_frame_then_a_question_gets_an_answer(server, loguru_errors):
    service, items = realtime_service(server)
    width, height = 64, 48
    frame = InputImageRawFrame(
        image=bytes([200, 30, 30]) * (width * height), size=(width, height), format="RGB"
    )
    context = LLMContext(messages=[{"role": "user", "content": "What colour is the picture?"}])
    upstream, downstream = await run_until_answered(service, items, [frame, LLMContextFrame(context)])
    assert_clean_answer(upstream, downstream, items, loguru_errors)
    assert "input_image" in items.user_parts and "input_text" in items.user_parts


async def test_a_required_function_is_called_with_its_arguments(server, loguru_errors):
    service, _ = realtime_service(server, tool_choice="required", max_output_tokens=TOOL_CALL_CAP_TOKENS)
    called, cities = asyncio.Event(), []

    async def get_weather(params: FunctionCallParams) -> None:
        cities.append(params.arguments["city"])
        called.set()
        await params.result_callback({"weather": "sunny"})

    service.register_function("get_weather", get_weather)
    weather = FunctionSchema(
        name="get_weather",
        description="Look up today's weather in a city.",
        properties={"city": {"type": "string"}},
        required=["city"],
    )
    context = LLMContext(
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=ToolsSchema(standard_tools=[weather]),
    )
    upstream, downstream = await run_pipeline(service, [LLMContextFrame(context)], lambda up, down: [called])
    assert not upstream.errors and not downstream.errors and not loguru_errors
    assert len(cities) == 1 and isinstance(cities[0], str)
