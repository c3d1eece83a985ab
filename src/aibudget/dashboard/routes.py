"""The dashboard's pages and forms under `/admin`: sign-in, the overview of every practice, one
practice's page with its chart, events and actions, and the CSV export of its events.

Pages are rendered on the server from `templates/`; the one script draws the burn-down chart with the
vendored uPlot from `static/`. Nothing loads from elsewhere (the Content-Security-Policy says so).

Security: the session is an HTTP-only, SameSite=Strict cookie naming a server-side session
(`auth.sessions`). Every form that changes something carries the session's CSRF token; the sign-in
form, which has no session yet, carries a token that must match a cookie set with the form. A form
whose token does not match is refused with 403 and nothing is written. An action repeats safely:
the grant form carries a reference made when the form was drawn, so sending it twice grants once.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from aibudget.auth.service import Unauthorized
from aibudget.auth.sessions import AdminSession
from aibudget.budget import Budget
from aibudget.dashboard import render
from aibudget.errors import AibudgetError, InvalidInput
from aibudget.ledger import reports
from aibudget.ledger.reports import parse_bound, resolve_bound
from aibudget.views.report import audio_seconds, to_csv

HERE = Path(__file__).parent
PREFIX = "/admin"
SESSION_COOKIE = "aibudget_session"
SIGNIN_COOKIE = "aibudget_signin"
EVENTS_PER_PAGE = 100
EVENT_STATUSES = ("success", "error", "blocked", "voided", "expired")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

CsrfToken = Annotated[str, Form(max_length=100)]  # the hidden field of every form

router = APIRouter(prefix=PREFIX, include_in_schema=False)
static = StaticFiles(directory=HERE / "static")
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    usd=render.usd, usd_exact=render.usd_exact, minor=render.minor, when=render.when, seconds=audio_seconds
)


class NotSignedIn(Exception):
    """A page was asked for without a live session: the answer is the sign-in page."""


def _budget(request: Request) -> Budget:
    budget: Budget = request.app.state.budget
    return budget


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _session(request: Request) -> AdminSession:
    session = _budget(request).dashboard_session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise NotSignedIn
    return session


def _checked(request: Request, csrf_token: str | None) -> AdminSession:
    """The session of a form post whose CSRF token is the session's; 403 otherwise."""
    session = _session(request)
    if not session.accepts(csrf_token):
        raise _Refused
    return session


class _Refused(Exception):
    """A form without this session's CSRF token."""


def not_signed_in(request: Request, _exc: Exception) -> Response:
    """The sign-in page for a page asked for without a session (303, back there after signing in; a
    form sent without a session is not sent again, so back to the overview)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = PREFIX
    return RedirectResponse(f"{PREFIX}/sign-in?{urlencode({'next': target})}", status_code=303)


def refused(request: Request, _exc: Exception) -> Response:
    return _page(request, "refused.html", {"session": None}, status=403)


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never an address elsewhere (no open redirect)."""
    if target and target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX


def _signin_page(request: Request, *, next_: str, error: str | None, status: int) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = _page(
        request, "sign_in.html", {"session": None, "csrf_token": token, "next": next_, "error": error}, status
    )
    response.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="strict", path=PREFIX,
                        secure=request.url.scheme == "https", max_age=3600)  # fmt: skip
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: str | None = None) -> Response:
    return _signin_page(request, next_=_safe_next(next), error=None, status=200)


@router.post("/sign-in")
def sign_in(
    request: Request,
    admin_key: Annotated[str, Form(max_length=500)] = "",
    csrf_token: CsrfToken = "",
    next: Annotated[str, Form(max_length=2000)] = PREFIX,
) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not expected or not secrets.compare_digest(expected.encode(), csrf_token.encode()):
        raise _Refused
    try:
        session = _budget(request).sign_in(admin_key)
    except Unauthorized:
        error = "This is not a valid admin key."
        return _signin_page(request, next_=_safe_next(next), error=error, status=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, session.token, httponly=True, samesite="strict", path=PREFIX,
                        secure=request.url.scheme == "https", expires=session.expires_at)  # fmt: skip
    response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
def sign_out(request: Request, csrf_token: CsrfToken = "") -> Response:
    session = _checked(request, csrf_token)
    _budget(request).sign_out(session.token)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("")
def overview(
    request: Request,
    q: str = "",
    sort: str = "practice_id",
    dir: str = "asc",
    page: int = 1,
) -> Response:
    session = _session(request)
    context: dict[str, Any] = {"session": session, "q": q, "sort": sort, "dir": dir}
    try:
        if dir not in ("asc", "desc"):
            raise InvalidInput("dir must be asc or desc", field="dir")
        context["page"] = _budget(request).overview(query=q, sort=sort, descending=dir == "desc", page=page)
    except InvalidInput as error:
        return _page(request, "overview.html", context | {"page": None, "error": error}, status=422)
    return _page(request, "overview.html", context)


@dataclass(frozen=True)
class EventFilters:
    """The events table's filters, from the query string; an empty field filters nothing."""

    status: str = ""
    model: str = ""
    operation: str = ""
    since: str = ""
    until: str = ""

    def report_args(self) -> dict[str, Any]:
        """The filters as `Budget.usage_report` takes them; `InvalidInput` names a bad one."""
        return {
            "status": self.status or None,
            "model": self.model or None,
            "operation": self.operation or None,
            "since": parse_bound(self.since, field="since") if self.since else None,
            "until": parse_bound(self.until, field="until") if self.until else None,
        }


def _practice_page(
    request: Request,
    session: AdminSession,
    practice_id: str,
    *,
    filters: EventFilters,
    notice: str | None = None,
    error: AibudgetError | None = None,
    status: int = 200,
) -> Response:
    budget = _budget(request)
    budget.snapshot(practice_id)  # brings an ended period up to date before the page's state is taken
    with budget.consistent_reads():  # every number on the page from one committed state
        practice = budget.get_practice(practice_id)
        snapshot = budget.snapshot(practice_id)
        burn_down = budget.burn_down(practice_id)  # also the period's calls by model and operation
        context: dict[str, Any] = {
            "session": session,
            "practice": practice,
            "snapshot": snapshot,
            "view": snapshot.client_view(locale="en"),
            "burn_down": burn_down,
            "chart": render.chart_data(burn_down),
            "by_model": burn_down.by_model,
            "by_operation": burn_down.by_operation,
            "grants": budget.grants(practice_id),
            "topup": budget.auto_topup(practice_id),
            "attempts": budget.topup_attempts(practice_id, limit=20),
            "notifications": budget.notifications(practice_id=practice_id, limit=20),
            "devices": budget.devices(practice_id),
            "filters": filters,
            "statuses": EVENT_STATUSES,
            "csv_query": urlencode({name: value for name, value in asdict(filters).items() if value}),
            "grant_reference": f"dashboard-{secrets.token_hex(8)}",
            "notice": notice,
            "error": error,
            "events": None,
        }
        try:
            report = budget.usage_report(practice_id, limit=EVENTS_PER_PAGE, **filters.report_args())
            context["events"] = report.rows
        except InvalidInput as bad_filter:
            context["error"], status = bad_filter, 422
    return _page(request, "practice.html", context, status=status)


@router.get("/practices/{practice_id}")
def practice(
    request: Request,
    practice_id: str,
    filters: Annotated[EventFilters, Depends()],
    notice: str | None = None,
) -> Response:
    session = _session(request)
    try:
        return _practice_page(request, session, practice_id, filters=filters, notice=render.notice(notice))
    except AibudgetError as error:
        return _page(request, "error.html", {"session": session, "error": error}, status=error.http_status)


@router.get("/practices/{practice_id}/events.csv")
def events_csv(request: Request, practice_id: str, filters: Annotated[EventFilters, Depends()]) -> Response:
    session = _session(request)
    try:
        report = _budget(request).usage_report(practice_id, limit=reports.MAX_LIMIT, **filters.report_args())
    except AibudgetError as error:
        return _page(request, "error.html", {"session": session, "error": error}, status=error.http_status)
    filename = f"{practice_id}-events-{date.today().isoformat()}.csv"
    return Response(
        to_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def _act(request: Request, practice_id: str, csrf_token: str, action: Any, notice: str) -> Response:
    """Run one action of the practice page; back to the page with a notice, or the page with the error."""
    session = _checked(request, csrf_token)
    try:
        action(_budget(request))
    except AibudgetError as error:
        try:
            return _practice_page(
                request, session, practice_id, filters=EventFilters(), error=error, status=error.http_status
            )
        except AibudgetError as page_error:  # the practice itself is gone or unknown
            context = {"session": session, "error": page_error}
            return _page(request, "error.html", context, status=page_error.http_status)
    return RedirectResponse(
        f"{PREFIX}/practices/{practice_id}?{urlencode({'notice': notice})}", status_code=303
    )


def _expiry(expires_on: str, timezone: str) -> datetime:
    """When credit given "until" `expires_on` runs out: the midnight after that day in the practice's
    timezone; a date-time as given (in that timezone when it has no offset)."""
    given = parse_bound(expires_on, field="expires_on")
    start = resolve_bound(given, timezone, field="expires_on")
    assert start is not None
    return start if isinstance(given, datetime) else start + timedelta(days=1)


@router.post("/practices/{practice_id}/grants")
def grant_credit(
    request: Request,
    practice_id: str,
    csrf_token: CsrfToken = "",
    amount_usd: Annotated[str, Form(max_length=40)] = "",
    reference: Annotated[str, Form(max_length=200)] = "",
    expires_on: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    def action(budget: Budget) -> None:
        timezone = budget.get_practice(practice_id).timezone
        budget.grant_credit(
            practice_id,
            amount_usd=amount_usd,  # as typed: read by `money.parse_usd`, like every typed amount
            source="manual",
            reference=reference,
            expires_at=_expiry(expires_on, timezone) if expires_on else None,
        )

    return _act(request, practice_id, csrf_token, action, "credit-granted")


@router.post("/practices/{practice_id}/auto-topup/pause")
def pause_topup(request: Request, practice_id: str, csrf_token: CsrfToken = "") -> Response:
    return _act(request, practice_id, csrf_token, lambda b: b.pause_auto_topup(practice_id), "topup-paused")


@router.post("/practices/{practice_id}/auto-topup/resume")
def resume_topup(request: Request, practice_id: str, csrf_token: CsrfToken = "") -> Response:
    return _act(request, practice_id, csrf_token, lambda b: b.resume_auto_topup(practice_id), "topup-resumed")


@router.post("/practices/{practice_id}/devices")
def bind_device(
    request: Request,
    practice_id: str,
    csrf_token: CsrfToken = "",
    device_id: Annotated[str, Form(max_length=500)] = "",
    user_key: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    def action(budget: Budget) -> None:
        budget.bind_device(device_id, practice_id=practice_id, user_key=user_key or None)

    return _act(request, practice_id, csrf_token, action, "device-bound")


@router.post("/practices/{practice_id}/devices/deactivate")
def deactivate_device(
    request: Request,
    practice_id: str,
    csrf_token: CsrfToken = "",
    device_id: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    def action(budget: Budget) -> None:
        budget.resolve_practice(practice_id=practice_id, device_id=device_id)  # its own, and active
        budget.deactivate_device(device_id)

    return _act(request, practice_id, csrf_token, action, "device-deactivated")


def install(app: Any) -> None:
    """Mount the dashboard: its routes, its static files and the answers to a missing session or token."""
    app.include_router(router)
    app.mount(f"{PREFIX}/static", static, name="dashboard-static")
    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.add_exception_handler(_Refused, refused)
