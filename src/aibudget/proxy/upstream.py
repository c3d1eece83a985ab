"""The upstream OpenAI-compatible API: one pooled `httpx.AsyncClient` per server process.

The vendor's provider key goes in the header the upstream expects — `Authorization: Bearer` for
OpenAI and most compatible servers, `api-key` for Azure OpenAI — and never the caller's own key,
which is an aibudget key. Paths are relative to `AIBUDGET_UPSTREAM_BASE_URL` (which includes `/v1`,
as the `openai` package's `base_url` does).
"""

from __future__ import annotations

import httpx

from aibudget.config import Settings

# headers of the caller's request that are passed on upstream; everything else is dropped
FORWARDED = ("accept", "openai-organization", "openai-project", "openai-beta", "user-agent")


class Upstream:
    def __init__(self, settings: Settings) -> None:
        headers = {}
        key = settings.upstream_api_key
        if key is not None:
            secret = key.get_secret_value()
            if settings.upstream_auth_header == "api-key":
                headers["api-key"] = secret
            else:
                headers["Authorization"] = f"Bearer {secret}"
        self.client = httpx.AsyncClient(
            base_url=settings.upstream_base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.upstream_timeout_seconds, connect=10),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def forwarded_headers(incoming: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in incoming.items() if name.lower() in FORWARDED}
