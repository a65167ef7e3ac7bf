"""Model providers (Anthropic Messages, OpenAI-compatible chat completions) and routing."""
