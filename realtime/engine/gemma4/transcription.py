"""Google's published Gemma 4 speech-recognition instruction, as the text that goes with the audio."""

from __future__ import annotations

from ..port import GenerationRequest, TextPart, TranscriptionRequest, Turn

# Names the instruction uses; a code not listed is written as given.
_LANGUAGE_NAMES = {
    "ar": "Arabic",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sv": "Swedish",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "zh": "Chinese",
}

_FORMATTING = (
    "Follow these specific instructions for formatting the answer:\n"
    "* Only output the transcription, with no newlines.\n"
    "* When transcribing numbers, write the digits, i.e. write 1.7 and not one point seven, "
    "and write 3 instead of three."
)


def asr_instruction(language: str | None = None, prompt: str | None = None) -> str:
    """The user-turn text placed before the audio (Gemma 4 prompt-formatting guide, ASR)."""
    if language:
        name = _LANGUAGE_NAMES.get(language.lower(), language)
        task = f"Transcribe the following speech segment in {name} into {name} text."
    else:
        task = "Transcribe the following speech segment in its original language."
    text = f"{task}\n\n{_FORMATTING}"
    if prompt and prompt.strip():
        # OpenAI's transcription prompt: vocabulary and style the transcript should follow.
        text += f"\n* Spell names and terms as in this context: {prompt.strip()}"
    return text


def transcription_generation(request: TranscriptionRequest) -> GenerationRequest:
    """The transcription as an out-of-band answer: the ASR instruction, then the turn's clips."""
    instruction = TextPart(asr_instruction(request.language, request.prompt))
    turn = Turn("user", (instruction, *request.clips), item_id=request.request_id)
    return GenerationRequest(
        session_id=request.session_id,
        response_id=request.request_id,
        output_item_id=request.request_id,
        instructions="",
        turns=(turn,),
        max_output_tokens=request.max_output_tokens,
        use_session_cache=False,
    )
