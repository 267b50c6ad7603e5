"""HTTP APIs on the engine port: OpenAI chat completions, Anthropic messages, the model list."""
