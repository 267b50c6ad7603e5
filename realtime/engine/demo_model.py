"""Builds the tiny, seeded, random-weight Gemma 4 checkpoint that `serve` uses when no model is given."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

from .demo_shapes import (
    AUDIO_CHUNKING,
    REAL_IMAGE_SOFT_TOKENS,
    SHAPES,
    VISION_PATCHING,
    Progress,
    real_text_config,
    real_tower_configs,
    write_random_checkpoint,
)
from .demo_turns import end_turns

DEMO_FORMAT_VERSION = 4
DEMO_MODEL_TYPES = ("gemma4", "gemma4_unified")
VOCAB_SIZE = 262_144
RANDOM_WEIGHTS_KEY = "mlx_realtime_random_weights"
# Smallest of Gemma 4's image budgets (70/140/280/560/1120 soft tokens; real checkpoints default to 280).
DEMO_IMAGE_SOFT_TOKENS = 70
AUDIO_MS_PER_TOKEN = 40
MAX_AUDIO_TOKENS = 750

# Ids and strings of the public Gemma 4 tokenizer (tokenizer.json / tokenizer_config.json), checked against
# published Gemma 4 vocab excerpts (<|tool> 46 … <turn|> 106, "\n" 107), the `extra_special_tokens` names in
# transformers' convert_gemma4_weights.py, and mlx-vlm's gemma4 configs for the multimodal ids
# (<|video|> 258884 is gemma4_unified's `video_token_id`).
SPECIAL_TOKENS: dict[int, str] = {
    0: "<pad>",
    1: "<eos>",
    2: "<bos>",
    3: "<unk>",
    4: "<mask>",
    46: "<|tool>",
    47: "<tool|>",
    48: "<|tool_call>",
    49: "<tool_call|>",
    50: "<|tool_response>",
    51: "<tool_response|>",
    52: '<|"|>',
    98: "<|think|>",
    100: "<|channel>",
    101: "<channel|>",
    105: "<|turn>",
    106: "<turn|>",
    255_999: "<|image>",
    256_000: "<|audio>",
    258_880: "<|image|>",
    258_881: "<|audio|>",
    258_882: "<image|>",
    258_883: "<audio|>",
    258_884: "<|video|>",
}
NEWLINE_TOKEN_ID = 107
NAMED_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "sot_token": "<|turn>",
    "eot_token": "<turn|>",
    "soc_token": "<|channel>",
    "eoc_token": "<channel|>",
    "think_token": "<|think|>",
    "escape_token": '<|"|>',
    "str_token": "<|tool_response>",
    "etr_token": "<tool_response|>",
    "stc_token": "<|tool_call>",
    "etc_token": "<tool_call|>",
    "std_token": "<|tool>",
    "etd_token": "<tool|>",
}

# Gemma 4's format as in the E2B template: bos, optional system turn (<|think|> when thinking is on),
# "model" for the assistant role, media as bare placeholders the processor expands, no pre-filled thought.
CHAT_TEMPLATE = """{{- bos_token -}}
{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content | trim -}}
    {%- else -%}
        {%- for item in content -%}
            {%- if item['type'] == 'text' -%}
                {{- item['text'] | trim -}}
            {%- elif item['type'] == 'image' -%}
                {{- '<|image|>' -}}
            {%- elif item['type'] == 'audio' -%}
                {{- '<|audio|>' -}}
            {%- elif item['type'] == 'video' -%}
                {{- '<|video|>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- set thinking = enable_thinking is defined and enable_thinking -%}
{%- if messages and messages[0]['role'] in ['system', 'developer'] -%}
    {%- set loop_messages = messages[1:] -%}
    {{- '<|turn>system\\n' -}}
    {%- if thinking -%}{{- '<|think|>\\n' -}}{%- endif -%}
    {{- render_content(messages[0]['content']) -}}
    {{- '<turn|>\\n' -}}
{%- else -%}
    {%- set loop_messages = messages -%}
    {%- if thinking -%}{{- '<|turn>system\\n<|think|>\\n<turn|>\\n' -}}{%- endif -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{- '<|turn>' + role + '\\n' -}}
    {{- render_content(message['content']) -}}
    {{- '<turn|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\\n' -}}
{%- endif -%}
"""

# Whole-word pieces so ordinary prompts tokenize to a handful of ids; everything else falls back to bytes.
_WORDS = (
    "a about and answer any are assistant audio be can color describe do does for hear hello help hi how i "
    "image in is it listen me model no of on picture please say see short sound speak tell test that the "
    "there this to user voice what which who world yes you your"
).split()
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _text_config(model_type: str) -> dict[str, Any]:
    # Real structure at toy size: sliding and full layers (real window 512; 128 so tests reach the
    # rotating cache), per-layer inputs and KV sharing for gemma4, K=V global layers for unified.
    common = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "head_dim": 32,
        "global_head_dim": 64,
        "vocab_size": VOCAB_SIZE,
        "vocab_size_per_layer_input": VOCAB_SIZE,
        "sliding_window": 128,
        "sliding_window_pattern": 2,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
        "max_position_embeddings": 131_072,
        "final_logit_softcapping": 30.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    }
    if model_type == "gemma4":
        return common | {
            "model_type": "gemma4_text",
            "num_key_value_heads": 1,
            "num_kv_shared_layers": 2,
            "hidden_size_per_layer_input": 8,
            "use_double_wide_mlp": True,
        }
    return common | {
        "model_type": "gemma4_unified_text",
        "num_key_value_heads": 2,
        "num_global_key_value_heads": 1,
        "num_kv_shared_layers": 0,
        "hidden_size_per_layer_input": 0,
        "attention_k_eq_v": True,
        "use_double_wide_mlp": False,
        "use_bidirectional_attention": "vision",
    }


def _tower_configs(model_type: str) -> dict[str, Any]:
    if model_type == "gemma4":
        vision = {
            "model_type": "gemma4_vision",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "global_head_dim": 16,
            **VISION_PATCHING,
            "default_output_length": DEMO_IMAGE_SOFT_TOKENS,
        }
        # The conformer keeps the real chunking (chunk 12, left context 13, right 0) and 128 mel bins.
        audio = {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "subsampling_conv_channels": [8, 4],
            **AUDIO_CHUNKING,
            "output_proj_dims": 64,
        }
        return {"vision_config": vision, "audio_config": audio}
    vision = {
        "model_type": "gemma4_unified_vision",
        "patch_size": 16,
        "pooling_kernel_size": 3,
        "model_patch_size": 48,
        "mm_embed_dim": 64,
        "mm_posemb_size": 1120,
        "num_soft_tokens": DEMO_IMAGE_SOFT_TOKENS,
        "output_proj_dims": 64,
    }
    # 640 samples (40 ms at 16 kHz) per token is the real, size-independent audio input width.
    audio = {
        "model_type": "gemma4_unified_audio",
        "audio_samples_per_token": 640,
        "audio_embed_dim": 640,
        "hidden_size": 640,
        "output_proj_dims": 640,
    }
    return {"vision_config": vision, "audio_config": audio}


def model_config(model_type: str, shape: str = "tiny") -> dict[str, Any]:
    if model_type not in DEMO_MODEL_TYPES:
        raise ValueError(f"demo model type must be one of {DEMO_MODEL_TYPES}, got {model_type!r}")
    if shape not in SHAPES or (shape != "tiny" and model_type != "gemma4"):
        raise ValueError(f"shape must be one of {SHAPES} (real sizes for gemma4 only), got {shape!r}")
    if shape != "tiny":
        text = real_text_config(shape)
        soft_tokens = {"vision_soft_tokens_per_image": REAL_IMAGE_SOFT_TOKENS}
        towers = real_tower_configs(text["hidden_size"])
        return model_config(model_type) | {"text_config": text, **towers, **soft_tokens}
    architecture = (
        "Gemma4ForConditionalGeneration"
        if model_type == "gemma4"
        else "Gemma4UnifiedForConditionalGeneration"
    )
    ids = {name: token_id for token_id, name in SPECIAL_TOKENS.items()}
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "text_config": _text_config(model_type),
        **_tower_configs(model_type),
        "vocab_size": VOCAB_SIZE,
        "pad_token_id": 0,
        "bos_token_id": 2,
        # 106 (<turn|>) here is what makes mlx-vlm stop at the end of a model turn.
        "eos_token_id": [1, 106],
        "image_token_id": ids["<|image|>"],
        "audio_token_id": ids["<|audio|>"],
        "video_token_id": ids["<|video|>"] if model_type == "gemma4_unified" else None,
        "boi_token_id": ids["<|image>"],
        "eoi_token_id": ids["<image|>"],
        "boa_token_id": ids["<|audio>"],
        "eoa_token_id": ids["<audio|>"],
        "vision_soft_tokens_per_image": DEMO_IMAGE_SOFT_TOKENS,
        "vision_soft_tokens_per_video_frame": DEMO_IMAGE_SOFT_TOKENS,
        "audio_soft_tokens_per_image": MAX_AUDIO_TOKENS,
        "audio_ms_per_token": AUDIO_MS_PER_TOKEN,
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
        # Served from any directory, a checkpoint with this key is announced as random weights.
        RANDOM_WEIGHTS_KEY: True,
    }


def _random_weights(config: dict[str, Any], seed: int, ends_turns: bool) -> dict[str, Any]:
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    # Built through mlx-vlm's own classes and config path, so names and shapes are what load() expects.
    model_module, _ = get_model_and_args(config=dict(config))
    model_args = model_module.ModelConfig.from_dict(config)
    model_args = update_module_configs(model_args, model_module, config, ["text", "vision", "audio"])
    mx.random.seed(seed)
    model = model_module.Model(model_args)
    weights = dict(tree_flatten(model.parameters()))
    # mlx-vlm starts the audio light-convolution kernels at zero, which would leave that path (and its
    # left context, which streaming encoding must get right) silent; give them seeded values too.
    for name, value in weights.items():
        if name.endswith("depthwise_conv1d.weight"):
            weights[name] = mx.random.normal(value.shape) * 0.5
    arrays = {name: np.array(value.astype(mx.float32)) for name, value in weights.items()}
    if ends_turns:
        end_turns(arrays, config, filler_token_ids())
    return {name: mx.array(value).astype(mx.bfloat16) for name, value in sorted(arrays.items())}


def _word_merges() -> tuple[list[str], list[tuple[str, str]]]:
    pieces: list[str] = []
    merges: list[tuple[str, str]] = []
    # Space-prefixed chains first: lower rank wins, so "▁the" is never split into "▁" + "the".
    for prefix in ("▁", ""):
        for word in _WORDS:
            left, rest = (prefix, word) if prefix else (word[0], word[1:])
            for char in rest:
                if (left, char) not in merges:
                    merges.append((left, char))
                    pieces.append(left + char)
                left += char
    return pieces, merges


def _vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    word_pieces, merges = _word_merges()
    pieces = [f"<0x{byte:02X}>" for byte in range(256)] + ["▁"] + [chr(code) for code in range(0x21, 0x7F)]
    vocab = {content: token_id for token_id, content in SPECIAL_TOKENS.items()} | {"\n": NEWLINE_TOKEN_ID}
    reserved = set(vocab.values())
    low_free = [i for i in range(NEWLINE_TOKEN_ID) if i not in reserved]
    vocab |= {f"<unused{n}>": token_id for n, token_id in enumerate(low_free)}
    free_ids = (i for i in range(NEWLINE_TOKEN_ID + 1, VOCAB_SIZE) if i not in reserved)
    vocab |= {piece: next(free_ids) for piece in dict.fromkeys(pieces + word_pieces)}
    vocab |= dict(zip((word for word in _filler_words() if word not in vocab), free_ids, strict=False))
    assert len(vocab) == VOCAB_SIZE
    return vocab, merges


def _filler_words() -> Iterator[str]:
    # Fillers are pronounceable words, so a random model's output reads as words, not as "<unused…>".
    syllables = [c + v for c, v in product(_CONSONANTS, _VOWELS)]
    return ("▁" + "".join(parts) for parts in product(syllables, repeat=3))


def filler_token_ids() -> list[int]:
    """Ids of the filler words: what the random model says, as opposed to what prompts are made of."""
    vocab, _ = _vocabulary()
    return [token_id for word in _filler_words() if (token_id := vocab.get(word)) is not None]


def build_tokenizer() -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    vocab, merges = _vocabulary()
    # Same pipeline as transformers' GemmaTokenizer: spaces become "▁", unknown characters fall back to bytes.
    tokenizer = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    specials = sorted(
        (token_id, name)
        for name, token_id in vocab.items()
        if token_id in SPECIAL_TOKENS or name.startswith("<unused")
    )
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False) for _, name in specials])
    return tokenizer


def _processor_class(model_type: str) -> str:
    return "Gemma4Processor" if model_type == "gemma4" else "Gemma4UnifiedProcessor"


def _tokenizer_config(model_type: str) -> dict[str, Any]:
    return {
        "tokenizer_class": "GemmaTokenizer",
        "backend": "tokenizers",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        # The chat template writes bos itself.
        "add_bos_token": False,
        "add_eos_token": False,
        "padding_side": "left",
        "model_max_length": 131_072,
        **NAMED_TOKENS,
        "processor_class": _processor_class(model_type),
    }


def _processor_config(model_type: str, n_image_tokens: int = DEMO_IMAGE_SOFT_TOKENS) -> dict[str, Any]:
    image = {
        "image_processor_type": "Gemma4ImageProcessor",
        "patch_size": 16,
        "pooling_kernel_size": 3,
        "max_soft_tokens": n_image_tokens,
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": False,
    }
    if model_type == "gemma4_unified":
        image |= {
            "image_processor_type": "Gemma4UnifiedImageProcessor",
            "model_patch_size": 48,
            "mm_posemb_size": 1120,
        }
    return {
        "processor_class": _processor_class(model_type),
        "image_processor": image,
        "image_seq_length": n_image_tokens,
        "audio_seq_length": MAX_AUDIO_TOKENS,
        "audio_ms_per_token": AUDIO_MS_PER_TOKEN,
    }


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_demo_model(
    out_dir: Path,
    seed: int = 0,
    model_type: str = "gemma4",
    ends_turns: bool = True,
    shape: str = "tiny",
    progress: Progress | None = None,
) -> Path:
    """ends_turns=False keeps the plain random weights, whose answers run to the token cap. Real-size
    shapes (e2b, e4b) are plain random weights, streamed to bf16 shards without holding them in memory."""
    import mlx.core as mx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model_config(model_type, shape)
    _write_json(out_dir / "config.json", config)
    if shape == "tiny":
        weights = _random_weights(config, seed, ends_turns)
        mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    else:
        write_random_checkpoint(out_dir, config, seed, progress or (lambda line: None))
    build_tokenizer().save(str(out_dir / "tokenizer.json"), pretty=False)
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(model_type))
    n_image_tokens = config["vision_soft_tokens_per_image"]
    _write_json(out_dir / "processor_config.json", _processor_config(model_type, n_image_tokens))
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    return out_dir


def cache_root() -> Path:
    if explicit := os.environ.get("MLX_REALTIME_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mlx-realtime"


def default_demo_dir(model_type: str = "gemma4", seed: int = 0, ends_turns: bool = True) -> Path:
    endless = "" if ends_turns else "-endless"
    return cache_root() / f"demo-{model_type}-s{seed}-v{DEMO_FORMAT_VERSION}{endless}"


def ensure_demo_model(model_type: str = "gemma4", seed: int = 0, ends_turns: bool = True) -> Path:
    """ends_turns=False: the variant whose answers run to the token cap (decode-rate benchmarks)."""
    target = default_demo_dir(model_type, seed, ends_turns)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed in one step: a concurrent builder (another test worker) never sees half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_demo_model(staging, seed=seed, model_type=model_type, ends_turns=ends_turns)
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
