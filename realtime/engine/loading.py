"""Finds a Gemma 4 checkpoint: the demo model, a local directory or a Hugging Face repo."""

from __future__ import annotations

import json
import re
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
