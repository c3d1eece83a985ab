"""The OpenAI-compatible proxy: routes under `/openai/v1`, the upstream client, usage from responses."""

PREFIX = "/openai/v1"  # where the proxy's routes are; its errors also carry OpenAI's error object
