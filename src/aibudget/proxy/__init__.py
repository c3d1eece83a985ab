"""The OpenAI-compatible proxy: routes under `/openai/v1`, the upstream client, usage from responses."""
