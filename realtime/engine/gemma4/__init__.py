"""The Gemma 4 adapter: what is specific to Gemma 4 and to mlx-vlm's implementation of it."""
