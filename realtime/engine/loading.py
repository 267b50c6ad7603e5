"""Finds a Gemma 4 checkpoint (demo, local directory or Hugging Face repo) and loads it through mlx-vlm."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.engine.demo_model import DEMO_MODEL_TYPES, ensure_demo_model

SUPPORTED_MODEL_TYPES = DEMO_MODEL_TYPES
# What mlx-vlm itself fetches for a repo: weights, configs, tokenizer, chat template.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class ModelNotFoundError(FileNotFoundError):
    pass


class UnsupportedModelError(ValueError):
    pass


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


def is_repo_id(spec: str) -> bool:
    """True when `spec` names a Hugging Face repo rather than a local path."""
    return (
        not Path(spec).expanduser().exists()
        and not spec.startswith(("/", ".", "~"))
        and bool(_REPO_ID.match(spec))
    )


def resolve_model_path(spec: str | None) -> tuple[Path, bool]:
    if spec is None:
        return ensure_demo_model(), True
    local = Path(spec).expanduser()
    if local.is_dir():
        return local, False
    if not is_repo_id(spec):
        raise ModelNotFoundError(f"{spec!r} is not a model directory (and not a Hugging Face repo id)")
    return _download(spec), False


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        # huggingface_hub draws its own tqdm progress bars on stderr.
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=_DOWNLOAD_PATTERNS))
    except GatedRepoError as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is gated on Hugging Face: accept its license and log in (`hf auth login`)"
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelNotFoundError(f"no Hugging Face repo {repo_id!r} (or it is private)") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"cannot download {repo_id!r}: Hugging Face is unreachable (offline?) "
            "and the repo is not in the local cache"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(f"cannot download {repo_id!r}: {exc}") from exc


def read_model_type(path: Path) -> tuple[str, dict[str, Any]]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(f"no config.json in {path}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(SUPPORTED_MODEL_TYPES)
        raise UnsupportedModelError(
            f"{path} is a {model_type!r} model; mlx-realtime serves Gemma 4 only (model_type {supported})"
        )
    return model_type, config


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
