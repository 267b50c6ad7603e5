"""The Gemma 4 adapter: what the engine knows about Gemma 4's prompts, token ids and mlx-vlm's model code."""
