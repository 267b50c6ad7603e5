import json
import shutil

import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image

from realtime.engine.demo_model import build_demo_model, default_demo_dir
from realtime.engine.gemma4.loading import ProcessorLoadError, load_model
from realtime.engine.loading import ModelNotFoundError, UnsupportedModelError, resolve_model_path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLX_REALTIME_CACHE", str(tmp_path_factory.mktemp("cache")))
        path, is_demo = resolve_model_path(None)
        assert (path, is_demo) == (default_demo_dir(), True)
        return path


@pytest.fixture(scope="module")
def unified_dir(tmp_path_factory):
    return build_demo_model(tmp_path_factory.mktemp("unified"), model_type="gemma4_unified")


def _copy_without_weights(source, target):
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    return target


def _write_config(directory, config):
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_local_directory_is_used_as_is(tmp_path):
    assert resolve_model_path(str(tmp_path)) == (tmp_path, False)


@pytest.mark.parametrize("spec", ["./no-such-model", "/no/such/model", "~/no-such-model", "a/b/c"])
def test_missing_local_path_is_a_clear_error(spec):
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        resolve_model_path(spec)


def test_repo_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve_model_path("google/gemma-4-E2B-it")


def test_other_model_types_are_rejected_before_loading(tmp_path):
    model_dir = _write_config(tmp_path / "llama", {"model_type": "llama"})
    with pytest.raises(UnsupportedModelError, match="gemma4, gemma4_unified") as raised:
        load_model(model_dir)
    assert isinstance(raised.value, ValueError)
    assert "'llama'" in str(raised.value)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(tmp_path)


@pytest.mark.slow
def test_demo_loads_with_gemma4_processor(demo):
    from mlx_vlm.models.gemma4.processing_gemma4 import Gemma4Processor

    loaded = load_model(demo, is_demo=True)
    assert (loaded.model_type, loaded.is_demo, loaded.path) == ("gemma4", True, demo)
    assert type(loaded.processor) is Gemma4Processor
    assert loaded.config["audio_token_id"] == 258881
    assert loaded.processor.image_processor.max_soft_tokens == 70


@pytest.mark.slow
def test_broken_processor_config_reports_its_own_cause(demo, tmp_path):
    broken = _copy_without_weights(demo, tmp_path / "broken")
    (broken / "processor_config.json").write_text("{not json")
    with pytest.raises(ProcessorLoadError, match="Gemma 4 processor failed to load") as raised:
        load_model(broken)
    assert isinstance(raised.value.__cause__, json.JSONDecodeError)


@pytest.mark.slow
def test_missing_tokenizer_is_detected(demo, tmp_path):
    broken = _copy_without_weights(demo, tmp_path / "no-tokenizer")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ProcessorLoadError, match="<\\|image\\|>"):
        load_model(broken)


@pytest.mark.slow
def test_unified_demo_loads_and_generates(unified_dir):
    from mlx_vlm import generate
    from mlx_vlm.models.gemma4_unified.processing_gemma4_unified import Gemma4UnifiedProcessor

    loaded = load_model(unified_dir)
    assert loaded.model_type == "gemma4_unified"
    assert type(loaded.processor) is Gemma4UnifiedProcessor
    prompt = "<bos><|turn>user\n{media}what do you see<turn|>\n<|turn>model\n"

    def run(media, **inputs):
        return generate(
            loaded.model, loaded.processor, prompt.format(media=media), max_tokens=3, verbose=False, **inputs
        )

    text = run("")
    # mlx_vlm.load resets gemma4_unified's image budget to 280; load_model restores the configured 70.
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (336, 480, 3), dtype=np.uint8))
    with_image = run("<|image|>", image=[image])
    assert with_image.prompt_tokens == text.prompt_tokens + 1 + 70 + 1
    # Encoder-free audio: one token per 640 samples (40 ms at 16 kHz).
    with_audio = run("<|audio|>", audio=[np.zeros(16_000, dtype=np.float32)])
    assert with_audio.prompt_tokens == text.prompt_tokens + 1 + 25 + 1
    assert min(result.generation_tokens for result in (text, with_image, with_audio)) >= 1
