"""The upstream OpenAI-compatible API: one pooled httpx transport per server process.

The vendor's provider key goes in the header the upstream expects — `Authorization: Bearer` for
OpenAI and most compatible servers, `api-key` for Azure OpenAI — and never the caller's own key,
which is an aibudget key. Paths are relative to `AIBUDGET_UPSTREAM_BASE_URL` (which includes `/v1`,
as the `openai` package's `base_url` does).

Requests go straight to httpx's connection pool (`AsyncHTTPTransport`), not through an
`httpx.AsyncClient`: the proxy keeps no state between calls, and a client's cookie jar would keep
what the upstream sets in one practice's answer and send it with every other practice's call.
"""

from __future__ import annotations

from typing import Any

import httpx

from aibudget.config import Settings
from aibudget.errors import InvalidInput

# headers of the caller's request that are passed on upstream; everything else is dropped
FORWARDED = ("accept", "openai-organization", "openai-project", "openai-beta", "user-agent")
# headers of the upstream's answer that are passed back: how long to wait before trying again
ANSWERED = ("retry-after", "retry-after-ms", "x-should-retry")
# sent unless the caller's request says otherwise (what an httpx client sends by default)
_DEFAULTS = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "user-agent": f"aibudget (httpx {httpx.__version__})",
}


class Upstream:
    def __init__(self, settings: Settings) -> None:
        base = httpx.URL(settings.upstream_base_url)
        self._base = base.copy_with(path=base.path.rstrip("/") + "/")
        self._urls: dict[str, httpx.URL] = {}
        self._own: dict[str, str] = {}
        key = settings.upstream_api_key
        if key is not None:
            secret = key.get_secret_value()
            if settings.upstream_auth_header == "api-key":
                self._own["api-key"] = secret
            else:
                self._own["authorization"] = f"Bearer {secret}"
        self._timeout = httpx.Timeout(settings.upstream_timeout_seconds, connect=10).as_dict()
        self._transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )

    def request(self, method: str, path: str, incoming: dict[str, str], **body: Any) -> httpx.Request:
        """A request for `path` with the caller's `FORWARDED` headers and the vendor's key; `body` as
        httpx takes it (`json=`, or `data=` and `files=` for a multipart upload), encoded here:
        `InvalidInput` when it cannot be (a JSON body with NaN, say)."""
        headers = _DEFAULTS | {name: value for name, value in incoming.items() if name.lower() in FORWARDED}
        url = self._urls.get(path)
        if url is None:  # a handful of paths: each joined once (tens of microseconds)
            # the base address's query (Azure's `api-version`) is kept: joining a path would drop it
            url = self._urls[path] = self._base.join(path).copy_with(query=self._base.query or None)
        try:
            request = httpx.Request(method, url, headers=headers | self._own, **body)
        except ValueError as error:  # NaN or Infinity (not JSON), a lone surrogate (not UTF-8)
            raise InvalidInput(f"the body cannot be sent on: {error}", field="body") from None
        request.extensions["timeout"] = self._timeout
        return request

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """The upstream's answer, read whole and its connection let go unless `stream` asks for a
        success (the caller then reads and closes it): an error answer is never a stream. Raises
        `httpx.HTTPError` when the upstream cannot be reached or does not answer in time."""
        response = await self._transport.handle_async_request(request)
        response.request = request
        if not stream or response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
