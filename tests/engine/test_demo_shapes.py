"""Real-size random checkpoints: E2B / E4B shapes checked lazily, the streamed writer checked at toy size."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import pytest

from realtime.cli import build_parser
from realtime.engine.demo_model import build_demo_model, model_config
from realtime.engine.demo_shapes import parameter_shapes, plan_shards, write_random_checkpoint

TEXT = "language_model.model."


def n_parameters(shapes) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def layer_count(shapes, prefix: str) -> int:
    return len({name[len(prefix) :].split(".")[0] for name in shapes if name.startswith(prefix)})


def test_e2b_has_gemma4_e2b_shapes():
    config = model_config("gemma4", "e2b")
    text = config["text_config"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]) == (1536, 35, 262_144)
    assert config["vision_soft_tokens_per_image"] == 280
    shapes = parameter_shapes(config)
    assert shapes[TEXT + "embed_tokens.weight"] == (262_144, 1536)
    # Per-layer inputs: 256 values per layer for each of the 262,144 tokens.
    assert shapes[TEXT + "embed_tokens_per_layer.weight"] == (262_144, 35 * 256)
    assert layer_count(shapes, TEXT + "layers.") == 35
    assert layer_count(shapes, "vision_tower.encoder.layers.") == 16
    assert shapes["vision_tower.encoder.layers.0.mlp.up_proj.linear.weight"][1] == 768
    assert layer_count(shapes, "audio_tower.layers.") == 12
    assert shapes["audio_tower.output_proj.weight"] == (1536, 1024)
    # ~5.1 B parameters: ~10.2 GB in bf16.
    assert 5.0e9 < n_parameters(shapes) < 5.2e9


def test_e4b_has_gemma4_e4b_shapes():
    config = model_config("gemma4", "e4b")
    shapes = parameter_shapes(config)
    assert shapes[TEXT + "embed_tokens.weight"] == (262_144, 2560)
    assert layer_count(shapes, TEXT + "layers.") == 42
    assert shapes[TEXT + "layers.0.mlp.gate_proj.weight"] == (10_240, 2560)
    # Two KV heads of 256 in sliding layers; the last 18 layers read earlier layers' KV and have none.
    assert shapes[TEXT + "layers.0.self_attn.k_proj.weight"] == (2 * 256, 2560)
    with_kv = [i for i in range(42) if f"{TEXT}layers.{i}.self_attn.k_proj.weight" in shapes]
    assert with_kv == list(range(24))
    assert shapes["embed_audio.embedding_projection.weight"] == (2560, 1536)


def test_real_shapes_are_for_gemma4_only():
    with pytest.raises(ValueError):
        model_config("gemma4_unified", "e2b")
    with pytest.raises(ValueError):
        model_config("gemma4", "e9b")


def test_shards_stay_under_their_size_and_keep_every_tensor():
    shapes = {"a": (10, 10), "b": (100, 100), "c": (10, 10), "d": (1,)}
    shards = plan_shards(shapes, max_bytes=400)
    assert sorted(name for shard in shards for name in shard) == ["a", "b", "c", "d"]
    # "b" alone is larger than a shard: it gets one of its own.
    assert ["b"] in shards and all(len(shard) >= 1 for shard in shards)


def test_make_demo_model_takes_a_shape():
    args = build_parser().parse_args(["make-demo-model", "out", "--shape", "e4b"])
    assert args.shape == "e4b"
    assert build_parser().parse_args(["make-demo-model", "out"]).shape == "tiny"


@pytest.mark.slow
def test_streamed_checkpoint_loads_and_generates_in_mlx_vlm(tmp_path):
    import mlx_vlm

    # The real-size writer, at toy size: the same shards, index and bf16 bytes an E2B build writes.
    directory = build_demo_model(tmp_path / "streamed")
    (directory / "model.safetensors").unlink()
    lines: list[str] = []
    config = json.loads((directory / "config.json").read_text())
    write_random_checkpoint(directory, config, seed=0, progress=lines.append)
    assert lines and lines[0].startswith("wrote model-00001-of-00001.safetensors")
    weights = mx.load(str(directory / "model-00001-of-00001.safetensors"))
    assert {value.dtype for value in weights.values()} == {mx.bfloat16}
    assert {name: tuple(value.shape) for name, value in weights.items()} == parameter_shapes(config)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(weights)
    norm = weights[TEXT + "norm.weight"]
    assert mx.all(norm == 1).item()
    model, processor = mlx_vlm.load(str(directory))
    prompt = "<bos><|turn>user\nhello<turn|>\n<|turn>model\n"
    result = mlx_vlm.generate(model, processor, prompt, max_tokens=3, verbose=False)
    assert 1 <= result.generation_tokens <= 3
