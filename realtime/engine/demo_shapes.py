"""Gemma 4 E2B and E4B shapes for random-weight checkpoints, streamed to disk one block at a time."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SHAPES = ("tiny", "e2b", "e4b")
REAL_IMAGE_SOFT_TOKENS = 280
_SHARD_BYTES = 2 * 1024**3
# Random values are made and written this many bytes at a time, so memory stays far below one tensor.
_BLOCK_BYTES = 64 * 1024**2
_BF16_BYTES = 2

Progress = Callable[[str], None]
# Size-independent parts of Gemma 4's towers, the same at toy size.
VISION_PATCHING = {"patch_size": 16, "pooling_kernel_size": 3, "position_embedding_size": 10_240}
AUDIO_CHUNKING = {
    "conv_kernel_size": 5,
    "attention_chunk_size": 12,
    "attention_context_left": 13,
    "attention_context_right": 0,
}


def real_text_config(shape: str) -> dict[str, Any]:
    """Gemma 4 E2B's text tower (mlx-vlm's gemma4 defaults), or E4B's, with every size field set."""
    e2b = {
        "model_type": "gemma4_text",
        "hidden_size": 1536,
        "intermediate_size": 6144,
        "num_hidden_layers": 35,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "global_head_dim": 512,
        "num_kv_shared_layers": 20,
        "hidden_size_per_layer_input": 256,
        "vocab_size": 262_144,
        "vocab_size_per_layer_input": 262_144,
        "sliding_window": 512,
        "sliding_window_pattern": 5,
        "max_position_embeddings": 131_072,
        "final_logit_softcapping": 30.0,
        "use_double_wide_mlp": True,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    }
    if shape == "e4b":
        e2b |= {
            "hidden_size": 2560,
            "intermediate_size": 10_240,
            "num_hidden_layers": 42,
            "num_kv_shared_layers": 18,
            "num_key_value_heads": 2,
        }
    n_layers, pattern = e2b["num_hidden_layers"], e2b["sliding_window_pattern"]
    period = ["sliding_attention"] * (pattern - 1) + ["full_attention"]
    return e2b | {"layer_types": (period * n_layers)[:n_layers]}


def real_tower_configs(text_hidden_size: int) -> dict[str, Any]:
    vision = {
        "model_type": "gemma4_vision",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 16,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
        "head_dim": 64,
        "global_head_dim": 64,
        **VISION_PATCHING,
        "default_output_length": REAL_IMAGE_SOFT_TOKENS,
    }
    audio = {
        "hidden_size": 1024,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "subsampling_conv_channels": [128, 32],
        **AUDIO_CHUNKING,
        "output_proj_dims": 1536,
    }
    return {"vision_config": vision, "audio_config": audio, "hidden_size": text_hidden_size}


def parameter_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every weight mlx-vlm's model class has for `config`, by name; nothing is computed or allocated."""
    from mlx.utils import tree_flatten

    model = _lazy_model(config)
    return {name: tuple(value.shape) for name, value in tree_flatten(model.parameters())}


def write_random_checkpoint(out_dir: Path, config: dict[str, Any], seed: int, progress: Progress) -> None:
    """bf16 safetensors shards of seeded random weights, plus mlx-vlm's index; peak memory ~one block."""
    from mlx.utils import tree_flatten

    # Vectors and scalars (norm scales, biases, layer scalars) keep the model's own initial values: they
    # are small, and random ones would not be the ones or zeros a checkpoint starts from.
    vectors = {
        name: value for name, value in tree_flatten(_lazy_model(config).parameters()) if value.ndim <= 1
    }
    shapes = parameter_shapes(config)
    shards = plan_shards(shapes)
    weight_map: dict[str, str] = {}
    for number, names in enumerate(shards, 1):
        filename = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: (shapes[name], vectors.get(name)) for name in names}
        n_bytes = _write_shard(out_dir / filename, tensors, seed, list(shapes).index)
        weight_map |= dict.fromkeys(names, filename)
        progress(f"wrote {filename} ({n_bytes / 1e9:.2f} GB, {len(names)} tensors)")
    total = sum(_n_elements(shape) for shape in shapes.values()) * _BF16_BYTES
    index = {"metadata": {"total_size": total, "format": "mlx"}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def plan_shards(shapes: dict[str, tuple[int, ...]], max_bytes: int = _SHARD_BYTES) -> list[list[str]]:
    """Names in order, cut into shards of at most max_bytes (a larger tensor gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in sorted(shapes.items()):
        n_bytes = _n_elements(shape) * _BF16_BYTES
        if shards[-1] and size + n_bytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n_bytes
    return shards


def _lazy_model(config: dict[str, Any]) -> Any:
    # mlx-vlm's own classes and config path, so names and shapes are what load() expects; MLX is lazy, so
    # the initial weights are never computed unless read.
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    model_module, _ = get_model_and_args(config=dict(config))
    model_args = model_module.ModelConfig.from_dict(config)
    model_args = update_module_configs(model_args, model_module, config, ["text", "vision", "audio"])
    return model_module.Model(model_args)


def _write_shard(
    path: Path, tensors: dict[str, tuple[tuple[int, ...], Any]], seed: int, tensor_number: Callable
) -> int:
    header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
    offset = 0
    for name, (shape, _) in tensors.items():
        n_bytes = _n_elements(shape) * _BF16_BYTES
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n_bytes]}
        offset += n_bytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, (shape, vector) in tensors.items():
            blocks = [vector] if vector is not None else _random_blocks(shape, seed, tensor_number(name))
            for block in blocks:
                out.write(_bf16_bytes(block))
    return offset


def _random_blocks(shape: tuple[int, ...], seed: int, tensor_number: int) -> Iterator[Any]:
    """Uniform in +-1/sqrt(fan-in), as MLX initialises a Linear, a slab of leading rows at a time."""
    import mlx.core as mx

    row_elements = _n_elements(shape[1:])
    rows_per_block = max(1, _BLOCK_BYTES // (row_elements * 4))
    bound = shape[-1] ** -0.5
    for block, start in enumerate(range(0, shape[0], rows_per_block)):
        rows = min(rows_per_block, shape[0] - start)
        key = mx.random.key(seed * 1_000_003 + tensor_number * 65_537 + block)
        yield mx.random.uniform(-bound, bound, (rows, *shape[1:]), key=key).astype(mx.bfloat16)


def _bf16_bytes(block: Any) -> bytes:
    import mlx.core as mx
    import numpy as np

    return np.array(block.astype(mx.bfloat16).view(mx.uint16)).tobytes()


def _n_elements(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n
