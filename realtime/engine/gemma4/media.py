"""Media parts to language-model embedding rows, one clip or image at a time, via the model's own towers."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from ..port import ENGINE_SAMPLE_RATE_HZ, AudioPart, ImagePart
from .audio_encoder import expected_n_tokens

MediaPart = AudioPart | ImagePart


class MediaEncoder:
    """Counts and computes the soft-token rows of one image or audio clip, as mlx-vlm 0.7.10 scatters them.

    Each clip is encoded on its own: mlx-vlm's batched multi-clip path gives a shorter clip before a
    longer one wrong embeddings, and a single clip is also what the prefix cache wants.
    """

    def __init__(self, model: Any, processor: Any, model_type: str) -> None:
        self._model = model
        self._processor = processor
        self._unified = model_type == "gemma4_unified"

    @property
    def has_audio(self) -> bool:
        return getattr(self._model, "embed_audio", None) is not None

    @property
    def has_vision(self) -> bool:
        return getattr(self._model, "embed_vision", None) is not None

    def count_tokens(self, part: MediaPart) -> int:
        if isinstance(part, AudioPart):
            return expected_n_tokens(self._processor, len(part.samples))
        return self._image_tokens(part.image.height, part.image.width)

    def embed(self, part: MediaPart) -> mx.array:
        """Rows of shape (count_tokens(part), text hidden size), in the text embedding dtype."""
        rows = self._embed_audio(part) if isinstance(part, AudioPart) else self._embed_image(part)
        dtype = self._model.language_model.model.embed_tokens.weight.dtype
        rows = rows.astype(dtype)
        mx.eval(rows)
        return rows

    def _image_tokens(self, height: int, width: int) -> int:
        from mlx_vlm.models.gemma4.processing_gemma4 import get_aspect_ratio_preserving_size

        ip = self._processor.image_processor
        max_patches = ip.max_soft_tokens * ip.pooling_kernel_size**2
        target_h, target_w = get_aspect_ratio_preserving_size(
            height, width, ip.patch_size, max_patches, ip.pooling_kernel_size
        )
        return (target_h // ip.patch_size) * (target_w // ip.patch_size) // ip.pooling_kernel_size**2

    def _embed_image(self, part: ImagePart) -> mx.array:
        data, soft_tokens = self._processor.image_processor.preprocess([part.image.convert("RGB")])
        pixels = mx.array(np.asarray(data["pixel_values"]))
        if self._unified:
            rows = self._model.encode_image(pixels, mx.array(data["image_position_ids"]))
        else:
            rows = self._model.encode_image(pixels)[0]
        expected = self.count_tokens(part)
        if soft_tokens[0] != expected or rows.shape[0] != expected:
            raise ValueError(f"image {part.key}: {rows.shape[0]} embedding rows for {expected} soft tokens")
        return rows

    def _embed_audio(self, part: AudioPart) -> mx.array:
        samples = np.asarray(part.samples, dtype=np.float32).reshape(-1)
        # Under ~25 ms the conformer's subsampling has no frame left (mlx-vlm fails there); one token's
        # worth of samples still counts as one token, so pad to it.
        samples_per_token = self._processor.audio_ms_per_token * ENGINE_SAMPLE_RATE_HZ // 1000
        if len(samples) < samples_per_token:
            samples = np.pad(samples, (0, samples_per_token - len(samples)))
        features = self._processor.feature_extractor(
            [samples], sampling_rate=ENGINE_SAMPLE_RATE_HZ, return_attention_mask=True
        )
        mel = mx.array(np.asarray(features["input_features"]))
        valid = mx.array(np.asarray(features["input_features_mask"]).astype(bool))
        if self._unified:
            rows = self._model.get_audio_features(mel, valid)
        else:
            encoded, _ = self._model.audio_tower(mel, ~valid)
            rows = self._model.embed_audio(encoded)[0]
        # mlx-vlm scatters rows modulo their count: when the processor counts one token more than the
        # encoder has frames, the last token gets row 0 again. Mirrored so answers match mlx-vlm's.
        n_tokens = self.count_tokens(part)
        if rows.shape[0] == 0 or rows.shape[0] < n_tokens - 1:
            raise ValueError(f"audio {part.key}: {rows.shape[0]} encoder rows for {n_tokens} tokens")
        return rows[mx.arange(n_tokens) % rows.shape[0]]
