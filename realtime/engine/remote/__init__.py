"""The remote engine: the engine port served by an OpenAI-compatible serving engine (vLLM, SGLang,
llama.cpp's server, mlx-vlm's server) over streamed chat completions."""

from .engine import RemoteEngine, RemoteEngineConfig

__all__ = ["RemoteEngine", "RemoteEngineConfig"]
