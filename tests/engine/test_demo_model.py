import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realtime.engine.demo_model import (
    DEMO_FORMAT_VERSION,
    build_demo_model,
    default_demo_dir,
    ensure_demo_model,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The public Gemma 4 tokenizer's ids, written out independently of the builder's own table.
GEMMA4_TOKEN_IDS = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<|tool_call>": 48,
    "<tool_call|>": 49,
    "<|tool_response>": 50,
    "<tool_response|>": 51,
    '<|"|>': 52,
    "<|think|>": 98,
    "<|channel>": 100,
    "<channel|>": 101,
    "<|turn>": 105,
    "<turn|>": 106,
    "\n": 107,
    "<|image>": 255999,
    "<|audio>": 256000,
    "<|image|>": 258880,
    "<|audio|>": 258881,
    "<image|>": 258882,
    "<audio|>": 258883,
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def demo_dir(cache_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLX_REALTIME_CACHE", str(cache_dir))
        return ensure_demo_model()


@pytest.fixture(scope="module")
def tokenizer(demo_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_dir))


@pytest.fixture(scope="module")
def loaded(demo_dir):
    import mlx_vlm

    return mlx_vlm.load(str(demo_dir))


def _file_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLX_REALTIME_CACHE", str(tmp_path / "explicit"))
    assert default_demo_dir() == tmp_path / "explicit" / f"demo-gemma4-s0-v{DEMO_FORMAT_VERSION}"
    monkeypatch.delenv("MLX_REALTIME_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_demo_dir("gemma4_unified", seed=3) == (
        tmp_path / "xdg" / "mlx-realtime" / f"demo-gemma4_unified-s3-v{DEMO_FORMAT_VERSION}"
    )
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_demo_dir() == tmp_path / "home" / ".cache" / "mlx-realtime" / f"demo-gemma4-s0-v{DEMO_FORMAT_VERSION}"


def test_ensure_builds_once_and_reuses(demo_dir, cache_dir, monkeypatch):
    monkeypatch.setenv("MLX_REALTIME_CACHE", str(cache_dir))
    assert demo_dir == cache_dir / f"demo-gemma4-s0-v{DEMO_FORMAT_VERSION}"
    weights_mtime_ns = (demo_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model() == demo_dir
    assert (demo_dir / "model.safetensors").stat().st_mtime_ns == weights_mtime_ns
    assert [path.name for path in cache_dir.iterdir()] == [demo_dir.name]


def test_checkpoint_is_small_bf16_safetensors(demo_dir):
    sizes = {path.name: path.stat().st_size for path in demo_dir.iterdir()}
    assert set(sizes) == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
    }
    assert sum(sizes.values()) < 60_000_000
    with open(demo_dir / "model.safetensors", "rb") as weights:
        header = json.loads(weights.read(struct.unpack("<Q", weights.read(8))[0]))
    dtypes = {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}
    assert dtypes == {"BF16"}


@pytest.mark.slow
def test_concurrent_builders_write_identical_bytes(demo_dir, tmp_path):
    env = os.environ | {"MLX_REALTIME_CACHE": str(tmp_path)}
    code = "from realtime.engine.demo_model import ensure_demo_model; print(ensure_demo_model())"
    builders = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [builder.communicate(timeout=120)[0].strip() for builder in builders]
    assert [builder.returncode for builder in builders] == [0, 0]
    assert outputs == [str(tmp_path / demo_dir.name)] * 2
    assert [path.name for path in tmp_path.iterdir()] == [demo_dir.name]
    assert _file_bytes(tmp_path / demo_dir.name) == _file_bytes(demo_dir)


@pytest.mark.slow
def test_other_seed_changes_only_weights(demo_dir, tmp_path):
    other = _file_bytes(build_demo_model(tmp_path / "seed1", seed=1))
    reference = _file_bytes(demo_dir)
    assert other.keys() == reference.keys()
    assert [name for name in reference if other[name] != reference[name]] == ["model.safetensors"]


def test_special_tokens_sit_at_gemma4_ids(tokenizer):
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in GEMMA4_TOKEN_IDS} == GEMMA4_TOKEN_IDS
    assert len(tokenizer) == 262_144
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 1, 0)
    assert tokenizer.encode("\n", add_special_tokens=False) == [107]
    assert tokenizer.encode("<|turn>user\n", add_special_tokens=False)[0] == 105
    named = {
        name: getattr(tokenizer, name) for name in ("image_token", "audio_token", "boi_token", "eoa_token")
    }
    assert named == {
        "image_token": "<|image|>",
        "audio_token": "<|audio|>",
        "boi_token": "<|image>",
        "eoa_token": "<audio|>",
    }


def test_tokenizer_round_trips_any_text(tokenizer):
    text = "Hello world, what do you see? Ünïcödé ✓ 日本\n\tdone"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode(" what do you see", add_special_tokens=False)) == 4


def test_chat_template_renders_gemma4_turns(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A sound."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " And this? "}]},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<bos><|turn>system\nBe brief.<turn|>\n"
        "<|turn>user\n<|audio|>What is this?<turn|>\n"
        "<|turn>model\nA sound.<turn|>\n"
        "<|turn>user\n<|image|>And this?<turn|>\n"
        "<|turn>model\n"
    )
    thinking = tokenizer.apply_chat_template(
        messages[:2], tokenize=False, add_generation_prompt=False, enable_thinking=True
    )
    assert thinking.startswith("<bos><|turn>system\n<|think|>\nBe brief.<turn|>\n")


@pytest.mark.slow
def test_mlx_vlm_loads_real_gemma4_structure(loaded):
    from mlx_vlm.models.gemma4.processing_gemma4 import Gemma4Processor

    model, processor = loaded
    assert type(processor) is Gemma4Processor
    text = model.config.text_config
    assert set(text.layer_types) == {"sliding_attention", "full_attention"}
    assert text.num_kv_shared_layers > 0 and text.hidden_size_per_layer_input > 0
    audio = model.config.audio_config
    chunking = (audio.attention_chunk_size, audio.attention_context_left, audio.attention_context_right)
    assert chunking == (12, 13, 0)
    assert model.config.eos_token_id == [1, 106]


def _generate(loaded, prompt, **media):
    from mlx_vlm import generate

    model, processor = loaded
    return generate(model, processor, prompt, max_tokens=3, verbose=False, **media)


PROMPT = "<bos><|turn>user\n{media}what do you see<turn|>\n<|turn>model\n"


@pytest.mark.slow
def test_generates_from_text_image_and_audio(loaded):
    text = _generate(loaded, PROMPT.format(media=""))
    assert 1 <= text.generation_tokens <= 3
    # 480x336 px is 10x7 cells of 3x3 16-px patches: exactly the 70-soft-token budget, so no resize.
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (336, 480, 3), dtype=np.uint8))
    with_image = _generate(loaded, PROMPT.format(media="<|image|>"), image=[image])
    assert with_image.prompt_tokens == text.prompt_tokens + 1 + 70 + 1
    # A larger image is shrunk to fit the budget, keeping its aspect ratio: 4:3 fits 9x7 cells.
    large = image.resize((1024, 768))
    with_large = _generate(loaded, PROMPT.format(media="<|image|>"), image=[large])
    assert with_large.prompt_tokens == text.prompt_tokens + 1 + 63 + 1
    one_second = (0.3 * np.sin(np.arange(16_000) * 0.05)).astype(np.float32)
    with_audio = _generate(loaded, PROMPT.format(media="<|audio|>"), audio=[one_second])
    # 40 ms per audio token: 25 soft tokens between <|audio> and <audio|>.
    assert with_audio.prompt_tokens == text.prompt_tokens + 1 + 25 + 1
    assert with_audio.generation_tokens >= 1 and with_image.generation_tokens >= 1


def _answer(loaded, prompt, **media):
    from mlx_vlm import generate

    model, processor = loaded
    return generate(model, processor, prompt, max_tokens=200, verbose=False, **media)


@pytest.mark.slow
def test_answers_end_their_turn_after_input_dependent_lengths(loaded):
    questions = ["hello", "what do you see in this picture please", "a b c d e f g h i j k l m n o p"]
    answers = [_answer(loaded, f"<bos><|turn>user\n{q}<turn|>\n<|turn>model\n") for q in questions]
    # mlx-vlm stops at <turn|> (in the config's eos ids) well before the 200-token cap.
    lengths = [answer.generation_tokens for answer in answers]
    assert all(5 <= n_tokens <= 70 for n_tokens in lengths), lengths
    assert len({answer.text for answer in answers}) == len(answers)
    assert len(set(lengths)) > 1
    half_second, two_seconds = (
        (0.3 * np.sin(np.arange(n_samples) * 0.05)).astype(np.float32) for n_samples in (8_000, 32_000)
    )
    short = _answer(loaded, PROMPT.format(media="<|audio|>"), audio=[half_second])
    long = _answer(loaded, PROMPT.format(media="<|audio|>"), audio=[two_seconds])
    # Audio soft tokens count as heard: the longer clip gets the longer answer.
    assert 5 <= short.generation_tokens < long.generation_tokens <= 70


@pytest.mark.slow
def test_endless_variant_runs_to_the_cap(tmp_path, monkeypatch):
    import mlx_vlm

    monkeypatch.setenv("MLX_REALTIME_CACHE", str(tmp_path))
    directory = ensure_demo_model(ends_turns=False)
    assert directory.name == f"demo-gemma4-s0-v{DEMO_FORMAT_VERSION}-endless"
    endless = mlx_vlm.load(str(directory))
    answer = _answer(endless, PROMPT.format(media=""))
    assert answer.generation_tokens == 200


@pytest.mark.slow
def test_unified_demo_ends_its_turns_too(tmp_path):
    import mlx_vlm

    unified = mlx_vlm.load(str(build_demo_model(tmp_path / "unified", model_type="gemma4_unified")))
    answer = _answer(unified, PROMPT.format(media=""))
    assert 5 <= answer.generation_tokens <= 70
