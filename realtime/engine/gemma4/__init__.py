"""Gemma 4 adapter: model-specific knowledge (token ids, prompt formats, mlx-vlm internals) lives here."""
