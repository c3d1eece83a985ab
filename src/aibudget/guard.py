"""`guard()`: an `openai` client whose every call is authorized before and settled after.

For applications that call the provider themselves, in process, instead of through the proxy:

```python
from openai import OpenAI
from aibudget import Budget, guard
client = guard(OpenAI(), Budget.open(), practice_id="praxis-muster")   # or a BudgetClient
client.chat.completions.create(model="gpt-4o-mini", messages=[...])     # BudgetExceeded when empty
```

Guarded: `create` of `chat.completions`, `responses` and `embeddings` (plain and `stream=True`),
also where `client.beta` offers them, and on every client `with_options(...)` / `copy(...)` makes (same
gate, same practice). Each call gets a new request id (or the `request_id=` you pass; `operation=`
names its operation), is held with the request's size and output cap, and is settled with the usage
the provider reported. A request id is for one call: one that was held before (in flight, answered
or failed) raises `Conflict` before the provider is called, as the proxy answers 409 — calling it
would pay the provider for an answer the ledger has settled already. A chat stream is asked for its
usage chunk, which is taken out again when the caller did not ask for it. A call that raises is
voided and recorded as an `error`; the provider's error goes on to the caller even when the gate
cannot take those (a note on it says so, and the hold expires by itself). A stream is settled when
it is exhausted or closed (use it as a context manager, or close it): a stream closed early is
charged by an estimate from the text streamed so far; a stream never read nor closed is never
settled (its hold expires, uncharged).

An answered call is paid to the provider: its answer is never lost, and its cost is either charged
or explicitly not. With a `Budget` as the gate, an answer that arrives while its database is
unavailable is returned all the same and its settle kept until the database takes it
(`Budget.settle_or_keep`). With a `BudgetClient` or `AsyncBudgetClient` as the gate, the client sends
an authorize, settle or void again with the same request id when it meets a transient failure (the
server restarting, a connection refused or reset, a timeout, a 502, 503 or 504), and the server
answers a repeated one with its first result: charged once, however many tries it took. An answered
call whose settle fails all the same — the server stays away longer than the client tries, or
refuses the settle — raises `UnsettledAnswer`: the provider's answer is in `.answer` (for a stream,
raised where it settles, at its end or close, after the events it delivered), `.request_id` names
the call for reconciliation, and `gate.settle(**error.settlement)` posts the charge later
(idempotent; the server takes a settle after the hold expired). Until then the call's hold expires
uncharged. Neither a silent answer nor a bare error: the first would leave the vendor paying a call
no ledger knows of, the second would make the caller pay the provider again for an answer it had.
A `Budget` gate raises `UnsettledAnswer` only when a settle can be neither posted nor kept.

Refused with a `TypeError` naming the guarded way, since they reach the provider past the gate:
`with_raw_response` and `with_streaming_response` (on the client, `chat`, `beta` and the guarded
resources), `chat.completions.parse` / `.stream`, `responses.parse` / `.stream` / `.compact` /
`.connect` (and those of them `client.beta` has). Passed through untouched: everything else, such as
`models`, `files`, `chat.completions.retrieve` / `list`, `responses.retrieve` / `input_tokens` — and
the other billable APIs (`audio`, `images`, legacy `completions`, `realtime`, …), which this guard
does not gate; send those through the proxy.

`openai.AsyncOpenAI` works the same, awaited. The gate is anything with the `Budget` methods
`authorize`, `settle` and `void`: the library's `Budget`, `aibudget.client.BudgetClient`, or
`AsyncBudgetClient` (async clients only — `guard` raises `TypeError` for a synchronous client, which
could not await it; a synchronous gate is run off the event loop). An async call cancelled once the
provider has answered is settled all the same before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
import httpx

from aibudget.errors import AibudgetError, Conflict
from aibudget.proxy import usage
from aibudget.proxy.usage import SettleUsage, StreamTally

_READ: dict[str, Callable[[dict[str, Any]], SettleUsage]] = {
    "chat": usage.chat_usage, "responses": usage.responses_usage, "embed": usage.embeddings_usage,
}  # fmt: skip
# ways of the openai package to the provider that would pass the gate (see module doc)
_RAW = frozenset({"with_raw_response", "with_streaming_response"})
_UNGUARDED = _RAW | {"parse", "stream", "compact", "connect"}
log = logging.getLogger(__name__)
# how a gate says it could not do a call: its answer (a `Budget`'s or the server's), or no answer
_GATE_FAILURES = (AibudgetError, httpx.TransportError)


class UnsettledAnswer(AibudgetError):
    """The provider answered a guarded call, and the gate could not settle it (see module doc).

    `answer` is the provider's answer (None for a stream: the caller has read its events),
    `request_id` and `practice_id` name the call for reconciliation, and `settlement` is what the
    settle was asked: `gate.settle(**error.settlement)` posts it once the gate is back (idempotent on
    the request id, and taken after the hold expired too). The settle's own error is `__cause__`.
    """

    code = "ANSWER_NOT_SETTLED"
    http_status = 503
    title = "Answered call not settled"

    def __init__(self, answer: Any, settlement: dict[str, Any], failure: Exception) -> None:
        self.answer = answer
        self.settlement = settlement
        self.request_id: str = settlement["request_id"]
        self.practice_id: str | None = settlement["practice_id"]
        super().__init__(
            f"the provider answered call {self.request_id!r} but its settle failed "
            f"({type(failure).__name__}: {failure}); the answer is in .answer, and "
            "gate.settle(**error.settlement) posts the charge later — until then the call is not charged"
        )


@contextmanager
def _settling(answer: Any, settlement: dict[str, Any]) -> Iterator[None]:
    """Around the settle of an answered call: `UnsettledAnswer` (carrying the answer) if it fails."""
    try:
        yield
    except Exception as failure:  # whatever it is, the provider is paid: keep the answer with the error
        raise UnsettledAnswer(answer, settlement, failure) from failure


def _settle_answered(gate: Any, answer: Any, settlement: dict[str, Any]) -> None:
    """Settle an answered call; `UnsettledAnswer` (carrying the answer) if that fails."""
    with _settling(answer, settlement):
        getattr(gate, _served(gate))(**settlement)


def _released(error: BaseException, call: _Call, failure: Exception) -> None:
    """The gate could not void and record a call the provider failed: the provider's `error` goes on,
    with a note; nothing was charged, and the hold expires by itself."""
    log.warning("the hold of failed call %r could not be released (%s); it expires", call.request_id,
                type(failure).__name__)  # fmt: skip
    error.add_note(
        f"aibudget: the hold of call {call.request_id!r} could not be released "
        f"({type(failure).__name__}: {failure}); nothing was charged, and the hold expires by itself"
    )


def _refused(path: str, name: str, instead: str) -> TypeError:
    return TypeError(
        f"{path}.{name} is not guarded by aibudget: it would reach the provider with no authorization "
        f"and no charge; use {instead} (stream=True for a stream)"
    )


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

    def check_first(self, held: Any) -> None:
        """Refuse a replayed authorization: this request id was held before (the call is in flight,
        answered or failed), and calling the provider again would pay for an answer the ledger cannot
        charge — its settle is taken or conflicts."""
        if getattr(held, "replayed", False):
            raise Conflict(
                f"request_id {self.request_id!r} was used before (its call is in flight, answered or "
                "failed); give each call its own request_id",
                field="request_id",
            )

    def settlement(self, used: SettleUsage, **extra: Any) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "model": self.model, "practice_id": self.practice_id,
            "operation": self.operation, **used, **extra,
        }  # fmt: skip

    def of_answer(self, answer: Any) -> dict[str, Any]:
        """How to settle a plain answer."""
        reported = _dump(answer.usage)
        if reported is None:  # a success without usage: charged by its size rather than nothing
            return self.settlement(usage.estimated_answer_usage(self.body, _dump(answer)), estimated=True)
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
        """Close the provider stream and settle: by the usage if it came, else by an estimate;
        `UnsettledAnswer` if the settle fails."""
        if not self._settled:
            self._settled = True
            self._stream.close()
            _settle_answered(self._gate, None, self._call.of_stream(self._tally))

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` (a settle or void) to its end even when the calling task is cancelled meanwhile, then
    let the cancellation go on: a bookkeeping step cut off halfway loses a charge the provider made.

    `anyio.CancelScope(shield=True)` stops anyio's and trio's cancellation, not asyncio's own
    (`asyncio.wait_for`, `asyncio.timeout`, `Task.cancel`); under asyncio the work is therefore its own
    task, waited for through `asyncio.shield` until it is done."""
    with anyio.CancelScope(shield=True):
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): the shield is enough
            await work
            return
        task = asyncio.ensure_future(work)
        cancelled: asyncio.CancelledError | None = None
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError as error:
                cancelled = error
        task.result()  # the work's own error, if it failed
        if cancelled is not None:
            raise cancelled


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
            await self.close()

    async def close(self) -> None:
        """Close the provider stream and settle (see `GuardedStream.close`), cancelled or not."""
        if not self._settled:
            self._settled = True
            await _to_the_end(self._close())

    async def _close(self) -> None:
        await self._stream.close()
        settlement = self._call.of_stream(self._tally)
        with _settling(None, settlement):
            await self._gate(self._settle, **settlement)

    async def __aenter__(self) -> AsyncGuardedStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


class _Guarded:
    """`create` of one resource, guarded; its ways past the gate refused; every other attribute is the
    resource's own."""

    def __init__(self, resource: Any, path: str, gate: Any, practice_id: str | None, kind: str) -> None:
        self._resource, self._path, self._gate = resource, path, gate
        self._practice_id, self._kind = practice_id, kind

    def __getattr__(self, name: str) -> Any:
        if name in _UNGUARDED and hasattr(self._resource, name):
            raise _refused(self._path, name, f"{self._path}.create")
        return getattr(self._resource, name)

    def create(self, **kwargs: Any) -> Any:
        call = _Call(self._practice_id, self._kind, kwargs)
        call.check_first(self._gate.authorize(**call.authorization()))
        try:
            answer = self._resource.create(**call.body)
        except BaseException as error:
            try:
                self._gate.void(request_id=call.request_id, practice_id=call.practice_id)
                self._gate.settle(**call.of_failure(error))
            except _GATE_FAILURES as failure:  # the provider's error is the caller's answer, not the gate's
                _released(error, call, failure)
            raise
        if call.streaming:
            return GuardedStream(self._gate, call, answer)
        _settle_answered(self._gate, answer, call.of_answer(answer))
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
        call.check_first(await self._ask("authorize", **call.authorization()))
        try:
            answer = await self._resource.create(**call.body)
        except BaseException as error:
            await _to_the_end(self._failed(call, error))
            raise
        if call.streaming:
            return AsyncGuardedStream(self._ask, _served(self._gate), call, answer)
        await _to_the_end(self._settle_answered(answer, call.of_answer(answer)))
        return answer

    async def _settle_answered(self, answer: Any, settlement: dict[str, Any]) -> None:
        """`_settle_answered`, awaited."""
        with _settling(answer, settlement):
            await self._ask(_served(self._gate), **settlement)

    async def _failed(self, call: _Call, error: BaseException) -> None:
        try:
            await self._ask("void", request_id=call.request_id, practice_id=call.practice_id)
            await self._ask("settle", **call.of_failure(error))
        except _GATE_FAILURES as failure:  # as in `_Guarded.create`
            _released(error, call, failure)


class _Namespace:
    """A part of the client (`chat`, `beta`, …) with its guarded resources in place and its raw-response
    views refused; every other attribute is the part's own."""

    def __init__(self, target: Any, path: str, **guarded: Any) -> None:
        self._target, self._path, self._guarded = target, path, guarded

    def __getattr__(self, name: str) -> Any:
        if name in self._guarded:
            return self._guarded[name]
        if name in _RAW:
            raise _refused(
                self._path, name, "the guarded create of chat.completions, responses or embeddings"
            )
        return getattr(self._target, name)


class _GuardedClient(_Namespace):
    """The guarded client; the clients `with_options` and `copy` make are guarded the same."""

    def __init__(self, client: Any, gate: Any, practice_id: str | None, **guarded: Any) -> None:
        super().__init__(client, "client", **guarded)
        self._gate, self._practice_id = gate, practice_id

    def with_options(self, **options: Any) -> Any:
        return guard(self._target.with_options(**options), self._gate, practice_id=self._practice_id)

    copy = with_options


def guard(client: Any, gate: Any, *, practice_id: str | None = None) -> Any:
    """`client` (an `openai.OpenAI` or `openai.AsyncOpenAI`) with its chat, responses and embeddings
    calls gated by `gate` (see module doc). A synchronous client with an async gate is a `TypeError`:
    nothing would await the gate, and every call would pass unchecked."""
    import openai  # only needed here: the guard is for users of the openai package

    asynchronous = isinstance(client, openai.AsyncOpenAI)
    if not asynchronous and inspect.iscoroutinefunction(getattr(gate, "authorize", None)):
        raise TypeError(
            f"{type(gate).__name__} is an async gate: it cannot guard the synchronous "
            f"{type(client).__name__}; use a synchronous gate (Budget, BudgetClient) or openai.AsyncOpenAI"
        )
    wrapper = _AsyncGuarded if asynchronous else _Guarded

    def wrap(resource: Any, path: str, kind: str) -> _Guarded:
        return wrapper(resource, f"client.{path}", gate, practice_id, kind)

    def chat(part: Any, path: str) -> _Namespace:
        return _Namespace(
            part, f"client.{path}", completions=wrap(part.completions, f"{path}.completions", "chat")
        )

    beta = client.beta
    return _GuardedClient(
        client, gate, practice_id,
        chat=chat(client.chat, "chat"),
        responses=wrap(client.responses, "responses", "responses"),
        embeddings=wrap(client.embeddings, "embeddings", "embed"),
        beta=_Namespace(
            beta, "client.beta", chat=chat(beta.chat, "beta.chat"),
            responses=wrap(beta.responses, "beta.responses", "responses"),
        ),
    )  # fmt: skip
