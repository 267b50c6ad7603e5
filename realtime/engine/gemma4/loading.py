"""Loads a Gemma 4 checkpoint through mlx-vlm and checks that mlx-vlm built the Gemma 4 processor for it."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..loading import read_model_type


class ProcessorLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    processor: Any
    config: dict[str, Any]
    model_type: str
    is_demo: bool
    path: Path


def load_model(path: Path, is_demo: bool = False) -> LoadedModel:
    model_type, config = read_model_type(path)
    import mlx_vlm

    try:
        with warnings.catch_warnings():
            # Gemma 4's own mel settings (128 filters over 257 FFT bins) trip this on every checkpoint.
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            model, processor = mlx_vlm.load(str(path))
    except Exception:
        _raise_processor_failure(model_type, path)
        raise
    _check_processor(processor, model_type, config, path)
    _restore_image_budget(processor, path)
    return LoadedModel(model, processor, config, model_type, is_demo, path)


def _gemma4_processor_class(model_type: str) -> type:
    if model_type == "gemma4":
        from mlx_vlm.models.gemma4.processing_gemma4 import Gemma4Processor

        return Gemma4Processor
    from mlx_vlm.models.gemma4_unified.processing_gemma4_unified import Gemma4UnifiedProcessor

    return Gemma4UnifiedProcessor


def _raise_processor_failure(model_type: str, path: Path) -> None:
    # mlx-vlm swallows the Gemma 4 processor's exception and falls back to a stock processor, which then
    # fails (or loads) for unrelated reasons; loading the Gemma 4 processor directly surfaces the real cause.
    try:
        _gemma4_processor_class(model_type).from_pretrained(str(path))
    except Exception as exc:
        raise ProcessorLoadError(f"the Gemma 4 processor failed to load from {path}: {exc}") from exc


def _check_processor(processor: Any, model_type: str, config: dict[str, Any], path: Path) -> None:
    expected = _gemma4_processor_class(model_type)
    if not isinstance(processor, expected):
        _raise_processor_failure(model_type, path)
        raise ProcessorLoadError(
            f"mlx-vlm loaded a {type(processor).__module__}.{type(processor).__name__} for {path}, "
            f"not {expected.__name__}"
        )
    # A missing or foreign tokenizer.json still yields a Gemma 4 processor, with a near-empty vocabulary.
    tokenizer = processor.tokenizer
    for token, id_key in (
        (processor.image_token, "image_token_id"),
        (processor.audio_token, "audio_token_id"),
    ):
        token_id = tokenizer.convert_tokens_to_ids(token) if token else None
        if token_id != config.get(id_key):
            raise ProcessorLoadError(
                f"the tokenizer in {path} maps {token!r} to {token_id}, but config.json has {id_key} "
                f"{config.get(id_key)}: tokenizer files missing or not Gemma 4's"
            )


def _restore_image_budget(processor: Any, path: Path) -> None:
    # mlx_vlm.load swaps in a default-configured image processor for gemma4_unified (280 soft tokens),
    # dropping the checkpoint's own budget; put the configured one back.
    config_path = path / "processor_config.json"
    if not config_path.is_file():
        return
    image_config = json.loads(config_path.read_text(encoding="utf-8")).get("image_processor") or {}
    budget = image_config.get("max_soft_tokens")
    if budget is not None and processor.image_processor.max_soft_tokens != budget:
        processor.image_processor.max_soft_tokens = budget
        processor.image_seq_length = budget
