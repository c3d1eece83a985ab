"""`guard()`: an `openai` client whose every call is authorized before and settled after.

For applications that call the provider themselves, in process, instead of through the proxy:

```python
from openai import OpenAI
from aibudget import Budget, guard
client = guard(OpenAI(), Budget.open(), practice_id="praxis-muster")   # or a BudgetClient
client.chat.completions.create(model="gpt-4o-mini", messages=[...])     # BudgetExceeded when empty
```

Guarded: `chat.completions.create` and `responses.create` (plain and `stream=True`) and
`embeddings.create`; everything else of the client is passed through untouched. Each call gets a new
request id (or the `request_id=` you pass; `operation=` names its operation), is held with the
request's size and output cap, and is settled with the usage the provider reported. A chat stream
is asked for its usage chunk, which is taken out again when the caller did not ask for it. A call
that raises is voided and recorded as an `error`. A stream is settled when it is exhausted or
closed (use it as a context manager, or close it): a stream closed early is charged by an estimate
from the text streamed so far. With a `Budget` as the gate, an answer that arrives while its
database is unavailable is returned all the same and its settle kept until the database takes it
(`Budget.settle_or_keep`): the provider is paid already, and an error would only make the caller
pay it twice.

`openai.AsyncOpenAI` works the same, awaited. The gate is anything with the `Budget` methods
`authorize`, `settle` and `void`: the library's `Budget`, `aibudget.client.BudgetClient`, or
`AsyncBudgetClient` (async clients only; a synchronous gate is then run off the event loop).
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import anyio

from aibudget.proxy import usage
from aibudget.proxy.usage import SettleUsage, StreamTally

_READ: dict[str, Callable[[dict[str, Any]], SettleUsage]] = {
    "chat": usage.chat_usage, "responses": usage.responses_usage, "embed": usage.embeddings_usage,
}  # fmt: skip


def _dump(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    dumped: dict[str, Any] = value.model_dump() if hasattr(value, "model_dump") else dict(value)
    return dumped


class _Call:
    """One guarded call: its identity, what to ask the gate, and what the provider gets."""

    def __init__(self, practice_id: str | None, kind: str, kwargs: dict[str, Any]) -> None:
        self.practice_id, self.kind = practice_id, kind
        self.operation: str = kwargs.pop("operation", None) or ("embed" if kind == "embed" else "chat")
        self.request_id: str = kwargs.pop("request_id", None) or f"guard_{secrets.token_urlsafe(18)}"
        self.body = kwargs
        self.model = usage.model_of(kwargs)
        self.streaming = kwargs.get("stream") is True and kind != "embed"
        self.hide_usage_chunk = False
        if self.streaming and kind == "chat":
            options = dict(kwargs.get("stream_options") or {})
            self.hide_usage_chunk = options.get("include_usage") is not True
            self.body = {**kwargs, "stream_options": {**options, "include_usage": True}}

    def authorization(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "operation": self.operation, "model": self.model,
            "practice_id": self.practice_id, "prompt_chars": usage.prompt_chars(self.body),
            "max_output_tokens": usage.output_cap(self.body),
        }  # fmt: skip

    def settlement(self, used: SettleUsage, **extra: Any) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "model": self.model, "practice_id": self.practice_id,
            "operation": self.operation, **used, **extra,
        }  # fmt: skip

    def of_answer(self, answer: Any) -> dict[str, Any]:
        """How to settle a plain answer."""
        reported = _dump(answer.usage)
        if reported is None:  # a success without usage: charged by the bound rather than nothing
            return self.settlement(usage.estimated_usage(self.body, 0), estimated=True)
        return self.settlement(_READ[self.kind](reported))

    def of_failure(self, error: BaseException) -> dict[str, Any]:
        return self.settlement({}, status="error", error_code=f"provider_{type(error).__name__}"[:64])

    def of_stream(self, tally: StreamTally) -> dict[str, Any]:
        used, estimated = tally.settle_usage(self.body)
        return self.settlement(used, estimated=estimated)


def _served(gate: Any) -> str:
    """The name of the gate's method that settles an answered call."""
    return "settle_or_keep" if hasattr(gate, "settle_or_keep") else "settle"


class GuardedStream:
    """A provider stream that settles its call when exhausted or closed (see module doc)."""

    def __init__(self, gate: Any, call: _Call, stream: Any) -> None:
        self._gate, self._call, self._stream = gate, call, stream
        self._tally = StreamTally(call.kind, hide_usage_chunk=call.hide_usage_chunk)
        self._settled = False

    def __iter__(self) -> Iterator[Any]:
        try:
            for event in self._stream:
                if self._tally.take(event.model_dump()):
                    yield event
        finally:
            self.close()

    def close(self) -> None:
        """Close the provider stream and settle: by the usage if it came, else by an estimate."""
        if not self._settled:
            self._settled = True
            self._stream.close()
            getattr(self._gate, _served(self._gate))(**self._call.of_stream(self._tally))

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncGuardedStream:
    """`GuardedStream` for `openai.AsyncOpenAI`."""

    def __init__(self, gate: Callable[..., Any], settle: str, call: _Call, stream: Any) -> None:
        self._gate, self._settle, self._call, self._stream = gate, settle, call, stream
        self._tally = StreamTally(call.kind, hide_usage_chunk=call.hide_usage_chunk)
        self._settled = False

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for event in self._stream:
                if self._tally.take(event.model_dump()):
                    yield event
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def close(self) -> None:
        if not self._settled:
            self._settled = True
            await self._stream.close()
            await self._gate(self._settle, **self._call.of_stream(self._tally))

    async def __aenter__(self) -> AsyncGuardedStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


class _Guarded:
    """`create` of one resource, guarded; every other attribute is the resource's own."""

    def __init__(self, resource: Any, gate: Any, practice_id: str | None, kind: str) -> None:
        self._resource, self._gate, self._practice_id, self._kind = resource, gate, practice_id, kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)

    def create(self, **kwargs: Any) -> Any:
        call = _Call(self._practice_id, self._kind, kwargs)
        self._gate.authorize(**call.authorization())
        try:
            answer = self._resource.create(**call.body)
        except BaseException as error:
            self._gate.void(request_id=call.request_id, practice_id=call.practice_id)
            self._gate.settle(**call.of_failure(error))
            raise
        if call.streaming:
            return GuardedStream(self._gate, call, answer)
        getattr(self._gate, _served(self._gate))(**call.of_answer(answer))
        return answer


class _AsyncGuarded(_Guarded):
    async def _ask(self, method: str, **kwargs: Any) -> Any:
        """Call the gate: awaited when it is async, else on a worker thread (it does database work)."""
        function = getattr(self._gate, method)
        if inspect.iscoroutinefunction(function):
            return await function(**kwargs)
        return await anyio.to_thread.run_sync(partial(function, **kwargs))

    async def create(self, **kwargs: Any) -> Any:
        call = _Call(self._practice_id, self._kind, kwargs)
        await self._ask("authorize", **call.authorization())
        try:
            answer = await self._resource.create(**call.body)
        except BaseException as error:
            with anyio.CancelScope(shield=True):
                await self._ask("void", request_id=call.request_id, practice_id=call.practice_id)
                await self._ask("settle", **call.of_failure(error))
            raise
        if call.streaming:
            return AsyncGuardedStream(self._ask, _served(self._gate), call, answer)
        await self._ask(_served(self._gate), **call.of_answer(answer))
        return answer


class _Namespace:
    def __init__(self, target: Any, **guarded: Any) -> None:
        self._target, self._guarded = target, guarded

    def __getattr__(self, name: str) -> Any:
        if name in self._guarded:
            return self._guarded[name]
        return getattr(self._target, name)


def guard(client: Any, gate: Any, *, practice_id: str | None = None) -> Any:
    """`client` (an `openai.OpenAI` or `openai.AsyncOpenAI`) with its chat, responses and embeddings
    calls gated by `gate` (see module doc)."""
    import openai  # only needed here: the guard is for users of the openai package

    wrap = _AsyncGuarded if isinstance(client, openai.AsyncOpenAI) else _Guarded
    return _Namespace(
        client,
        chat=_Namespace(client.chat, completions=wrap(client.chat.completions, gate, practice_id, "chat")),
        responses=wrap(client.responses, gate, practice_id, "responses"),
        embeddings=wrap(client.embeddings, gate, practice_id, "embed"),
    )
