"""The Gemma 4 adapter: everything that knows Gemma 4's token ids and chat format or mlx-vlm's internals.

The rest of the engine is model-agnostic. What this package mirrors was read from mlx-vlm 0.7.x (its
Gemma 4 processor, towers, KV caches and language-model call); pyproject bounds mlx-vlm to that range,
and a newer mlx-vlm must be checked against the adapter's tests before the bound moves.
"""

MLX_VLM_VERSION_RANGE = ">=0.7.10,<0.8"
