"""`guard()`: an `openai.OpenAI` client whose every call is authorized before and settled after.

For applications that call the provider themselves, in process, instead of through the proxy:

```python
from openai import OpenAI
from aibudget import Budget, guard
client = guard(OpenAI(), Budget.open(), practice_id="praxis-muster")   # or a BudgetClient
client.chat.completions.create(model="gpt-4o-mini", messages=[...])     # BudgetExceeded when empty
```

Guarded: `chat.completions.create` and `responses.create` (plain and `stream=True`) and
`embeddings.create`; everything else of the client is passed through untouched. Each call gets a new
request id (or the `request_id=` you pass), is held with the request's size and output cap, and is
settled with the usage the provider reported. A chat stream is asked for its usage chunk, which is
taken out again when the caller did not ask for it. A call that raises is voided and recorded as an
`error`. A stream is settled when it is exhausted or closed (use it as a context manager, or call
`close()`): a stream closed early is charged by an estimate from the text streamed so far.

The gate is anything with the `Budget` methods `authorize`, `settle` and `void` — the library's
`Budget` or the HTTP `aibudget.client.BudgetClient`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from aibudget.proxy import usage
from aibudget.proxy.usage import SettleUsage


class Gate(Protocol):
    def authorize(
        self, *, request_id: str, operation: str, model: str, practice_id: str | None = None,
        prompt_chars: int | None = None, max_output_tokens: int | None = None,
    ) -> Any: ...  # fmt: skip

    def settle(self, *, request_id: str, model: str, practice_id: str | None = None,
               operation: str | None = None, **used: Any) -> Any: ...  # fmt: skip

    def void(self, *, request_id: str, practice_id: str | None = None) -> Any: ...


def _dump(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    dumped: dict[str, Any] = value.model_dump() if hasattr(value, "model_dump") else dict(value)
    return dumped


class _Call:
    """One guarded call: its identity and the gate calls around it."""

    def __init__(self, gate: Gate, practice_id: str | None, operation: str, kwargs: dict[str, Any]) -> None:
        self.gate, self.practice_id, self.operation = gate, practice_id, operation
        self.request_id: str = kwargs.pop("request_id", None) or f"guard_{secrets.token_urlsafe(18)}"
        self.body = kwargs
        self.model = usage.model_of(kwargs)

    def authorize(self) -> None:
        self.gate.authorize(
            request_id=self.request_id, operation=self.operation, model=self.model,
            practice_id=self.practice_id, prompt_chars=usage.prompt_chars(self.body),
            max_output_tokens=usage.output_cap(self.body),
        )  # fmt: skip

    def settle(self, used: SettleUsage, **extra: Any) -> None:
        self.gate.settle(
            request_id=self.request_id, model=self.model, practice_id=self.practice_id,
            operation=self.operation, **used, **extra,
        )  # fmt: skip

    def fail(self, error: BaseException) -> None:
        self.gate.void(request_id=self.request_id, practice_id=self.practice_id)
        self.settle({}, status="error", error_code=f"provider_{type(error).__name__}"[:64])


class GuardedStream:
    """A provider stream that settles its call when exhausted or closed (see module doc)."""

    def __init__(self, call: _Call, stream: Any, kind: str, *, hide_usage_chunk: bool) -> None:
        self._call, self._stream, self._kind = call, stream, kind
        self._hide = hide_usage_chunk
        self._usage: dict[str, Any] | None = None
        self._chars = 0
        self._settled = False

    def __iter__(self) -> Iterator[Any]:
        try:
            for event in self._stream:
                if self._take(event):
                    yield event
        finally:
            self.close()

    def _take(self, event: Any) -> bool:
        if self._kind == "chat":
            for choice in event.choices:
                self._chars += len(choice.delta.content or "")
            if event.usage is not None:
                self._usage = _dump(event.usage)
                return not (self._hide and not event.choices)
            return True
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            self._chars += len(event.delta)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._usage = _dump(event.response.usage)
        return True

    def close(self) -> None:
        """Close the provider stream and settle: by the usage if it came, else by an estimate."""
        if self._settled:
            return
        self._settled = True
        self._stream.close()
        if self._usage is not None:
            read = usage.chat_usage if self._kind == "chat" else usage.responses_usage
            self._call.settle(read(self._usage))
        else:
            self._call.settle(usage.estimated_usage(self._call.body, self._chars), estimated=True)

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Guarded:
    """`create` of one resource, guarded; every other attribute is the resource's own."""

    def __init__(self, resource: Any, gate: Gate, practice_id: str | None, kind: str) -> None:
        self._resource, self._gate, self._practice_id, self._kind = resource, gate, practice_id, kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)

    def create(self, **kwargs: Any) -> Any:
        operation = kwargs.pop("operation", None) or ("embed" if self._kind == "embed" else "chat")
        call = _Call(self._gate, self._practice_id, operation, kwargs)
        call.authorize()
        streaming = kwargs.get("stream") is True and self._kind != "embed"
        hide = False
        if streaming and self._kind == "chat":
            options = dict(kwargs.get("stream_options") or {})
            hide = options.get("include_usage") is not True
            kwargs["stream_options"] = {**options, "include_usage": True}
        try:
            answer = self._resource.create(**kwargs)
        except BaseException as error:
            call.fail(error)
            raise
        if streaming:
            return GuardedStream(call, answer, self._kind, hide_usage_chunk=hide)
        reported = _dump(answer.usage)
        read: Callable[[dict[str, Any]], SettleUsage] = {
            "chat": usage.chat_usage, "responses": usage.responses_usage, "embed": usage.embeddings_usage,
        }[self._kind]  # fmt: skip
        if reported is None:
            call.settle(usage.estimated_usage(call.body, 0), estimated=True)
        else:
            call.settle(read(reported))
        return answer


class _Namespace:
    def __init__(self, target: Any, **guarded: Any) -> None:
        self._target, self._guarded = target, guarded

    def __getattr__(self, name: str) -> Any:
        if name in self._guarded:
            return self._guarded[name]
        return getattr(self._target, name)


def guard(client: Any, gate: Gate, *, practice_id: str | None = None) -> Any:
    """`client` (an `openai.OpenAI`) with its chat, responses and embeddings calls gated by `gate`."""
    completions = _Guarded(client.chat.completions, gate, practice_id, "chat")
    return _Namespace(
        client,
        chat=_Namespace(client.chat, completions=completions),
        responses=_Guarded(client.responses, gate, practice_id, "responses"),
        embeddings=_Guarded(client.embeddings, gate, practice_id, "embed"),
    )
