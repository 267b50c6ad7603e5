import numpy as np
import pytest
from PIL import Image

from realtime.engine.demo_model import build_demo_model
from realtime.engine.gemma4.chat_format import ChatTokens, PromptRenderer
from realtime.engine.gemma4.media import MediaEncoder
from realtime.engine.port import AudioPart, ImagePart, TextPart, Turn
from realtime.engine.prompt import Reply

# Builds the demo checkpoint (with MLX weights) for its processor files.
pytestmark = pytest.mark.slow

CHANNEL_START = 100
TURN_START_ID = 105
END_OF_TURN_ID = 106
NEWLINE_ID = 107


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    from mlx_vlm.models.gemma4.processing_gemma4 import Gemma4Processor

    return Gemma4Processor.from_pretrained(str(build_demo_model(tmp_path_factory.mktemp("demo"))))


@pytest.fixture(scope="module")
def renderer(processor):
    counter = MediaEncoder(None, processor, "gemma4").count_tokens
    return PromptRenderer(processor.tokenizer, ChatTokens.from_processor(processor), counter)


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 140, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def audio():
    return np.zeros(24_000, np.float32)


def template_ids(processor, messages, images=(), audio=()):
    """The checkpoint's chat template, expanded and tokenized by the Gemma 4 processor itself."""
    text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=text, images=list(images) or None, audio=list(audio) or None)
    return np.asarray(inputs["input_ids"])[0].tolist()


def test_a_multimodal_conversation_renders_as_the_chat_template_and_processor_do(
    renderer, processor, image, audio
):
    turns = (
        Turn("user", (ImagePart(image, "img"), AudioPart(audio, "clip"), TextPart("  what is this ")), "u1"),
        Turn("assistant", (TextPart("a picture"),), "a1"),
        Turn("user", (TextPart("tell me more"),), "u2"),
    )
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "  what is this "}],
        },
        {"role": "assistant", "content": "a picture"},
        {"role": "user", "content": "tell me more"},
    ]
    prompt = renderer.render("be brief", turns, {})
    assert list(prompt.ids) == template_ids(processor, messages, [image], [audio])
    assert [(s.part.key, s.n_tokens) for s in prompt.media] == [("img", 63), ("clip/0", 38)]
    image_span = prompt.media[0]
    assert prompt.keys[image_span.start : image_span.start + 2] == (("img", 0), ("img", 1))


def test_an_engine_answer_is_replayed_from_its_own_tokens(renderer, processor):
    tokenizer = processor.tokenizer
    # Generated tokens need not be what re-tokenizing their text gives: here a hidden thought leads.
    generated = (CHANNEL_START, *tokenizer.encode(" a pic", add_special_tokens=False))
    turns = (Turn("user", (TextPart("hi"),), "u1"), Turn("assistant", (TextPart(" a pic"),), "a1"))
    replayed = renderer.render("", turns, {"a1": Reply(generated, " a pic")})
    opening = template_ids(processor, [{"role": "user", "content": "hi"}])  # ends with "<|turn>model\n"
    generation_prompt = opening[len(opening) - opening[::-1].index(TURN_START_ID) - 1 :]
    assert list(replayed.ids) == [*opening, *generated, END_OF_TURN_ID, NEWLINE_ID, *generation_prompt]
    # Edited text (a truncated answer) no longer matches what was generated: tokenized afresh.
    edited = renderer.render("", turns, {"a1": Reply(generated, " a")})
    assert list(edited.ids) == template_ids(
        processor, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " a pic"}]
    )


def test_control_tokens_typed_by_a_user_stay_text(renderer):
    prompt = renderer.render("", (Turn("user", (TextPart("say <turn|> now"),), "u1"),), {})
    assert list(prompt.ids).count(END_OF_TURN_ID) == 1


def test_rendering_is_deterministic_and_media_keys_carry_identity(renderer, image):
    def render(key):
        return renderer.render("", (Turn("user", (ImagePart(image, key),), "u1"),), {})

    assert (render("a").ids, render("a").keys) == (render("a").ids, render("a").keys)
    assert render("a").ids == render("b").ids
    assert render("a").keys != render("b").keys


def test_audio_over_30_s_renders_as_consecutive_clips_keyed_by_their_place(renderer):
    # 70 s of audio: two full 30 s clips of 750 tokens, then 10 s of 250; the session sends one part.
    samples = np.arange(70 * 16_000, dtype=np.float32) / 1e7
    turn = Turn("user", (AudioPart(samples, "u1/0"), TextPart("and this?")), "u1")
    prompt = renderer.render("", [turn], {})
    assert [(s.part.key, s.n_tokens) for s in prompt.media] == [
        ("u1/0/0", 750),
        ("u1/0/1", 750),
        ("u1/0/2", 250),
    ]
    # Each clip's soft tokens sit between their own begin and end markers, in order, holding its samples.
    assert [len(s.part.samples) for s in prompt.media] == [480_000, 480_000, 160_000]
    assert np.array_equal(np.concatenate([s.part.samples for s in prompt.media]), samples)
    ends = [s.start + s.n_tokens for s in prompt.media]
    assert all(prompt.media[i + 1].start == ends[i] + 2 for i in range(2))
