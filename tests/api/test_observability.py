"""Health, readiness, metrics and request logs, against a real server (SPEC §7, §9).

Metrics are labelled by route template, never by path, and carry no practice, device or request id;
every request leaves one JSON log line with its request id, and no line holds a key, a device id or
a metadata value.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from aibudget import Budget, Settings
from aibudget.api.app import create_app
from aibudget.api.observability import JsonFormatter
from tests.api.conftest import Server

PRACTICE = "obs-practice-7c1"
UNSUBSCRIBED = "obs-practice-nosub"
DEVICE = "secret-device-123"
META_VALUE = "note-value-xyz"


@pytest.fixture(scope="module")
def service_key(server: Server) -> Iterator[str]:
    budget = server.budget()
    try:
        now = int(time.time())
        budget.put_practice(PRACTICE, name="Praxis Observability")
        budget.put_practice(UNSUBSCRIBED, name="Praxis ohne Abo")
        budget.put_plan("obs-basic", included_usd="20")
        budget.put_subscription(
            "sub_obs_1", practice_id=PRACTICE, plan="obs-basic", status="active",
            current_period_start=now - 86_400, current_period_end=now + 29 * 86_400,
        )  # fmt: skip
        budget.bind_device(DEVICE, practice_id=PRACTICE)
        yield budget.create_key(role="service", label="observability tests")[1]
    finally:
        budget.close()


def authorize(server: Server, key: str, request_id: str, practice_id: str = PRACTICE) -> int:
    body = {"practice_id": practice_id, "request_id": request_id, "operation": "letter",
            "model": "gpt-4o-mini", "estimate": {"input_tokens": 1000, "max_output_tokens": 500}}  # fmt: skip
    with server.client(key) as client:
        return client.post("/v1/authorizations", json=body).status_code


def metric_lines(server: Server, name: str) -> list[str]:
    with server.client() as client:
        text = client.get("/metrics").text
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_healthz_answers_without_a_key(server: Server) -> None:
    with server.client() as client:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_answers_when_the_database_does(server: Server) -> None:
    with server.client() as client:
        response = client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "database": "ok"})


def test_readyz_is_a_503_problem_while_the_database_does_not_answer(tmp_path: Path) -> None:
    unreachable = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'aibudget.sqlite3'}")
    budget = Budget(unreachable, Settings.load(data_dir=tmp_path / "var"))
    with TestClient(create_app(budget=budget)) as client:
        ready, alive = client.get("/readyz"), client.get("/healthz")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    assert ready.json()["error_code"] == "UNAVAILABLE"
    assert alive.status_code == 200  # liveness never depends on the database


def test_metrics_count_requests_per_route_template_without_ids(server: Server, service_key: str) -> None:
    assert authorize(server, service_key, "obs-req-void-1") == 201
    with server.client(service_key) as client:
        voided = client.post("/v1/authorizations/obs-req-void-1/void", json={"practice_id": PRACTICE})
    assert voided.status_code == 200
    with server.client() as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/no/such/page").status_code == 404
        exposition = client.get("/metrics")
    assert exposition.status_code == 200
    assert exposition.headers["content-type"].startswith("text/plain")
    requests = metric_lines(server, "aibudget_http_requests_total")
    void_series = 'method="POST",route="/v1/authorizations/{request_id}/void",status="200"'
    assert any(line.startswith(f"aibudget_http_requests_total{{{void_series}}} ") for line in requests)
    assert any('route="/v1/authorizations",status="201"' in line for line in requests)
    assert any('method="GET",route="/docs",status="200"' in line for line in requests)  # not "unmatched"
    assert any('method="GET",route="unmatched",status="404"' in line for line in requests)
    assert not any("/no/such/page" in line for line in requests)
    for secret in (PRACTICE, "obs-req-void-1", DEVICE, service_key):
        assert secret not in exposition.text
    assert any(line.startswith("aibudget_http_request_duration_seconds_bucket{")
               for line in exposition.text.splitlines())  # fmt: skip


def test_metrics_count_authorizations_by_outcome_and_cost_by_model(server: Server, service_key: str) -> None:
    assert authorize(server, service_key, "obs-req-ok-1") == 201
    assert authorize(server, service_key, "obs-req-refused-1", practice_id=UNSUBSCRIBED) == 402
    settle = {"practice_id": PRACTICE, "request_id": "obs-req-ok-1", "operation": "letter",
              "model": "gpt-4o-mini", "usage": {"input_tokens": 1000, "output_tokens": 400}}  # fmt: skip
    with server.client(service_key) as client:
        assert client.post("/v1/usage", json=settle).status_code == 201
    authorizations = metric_lines(server, "aibudget_authorizations_total")
    assert any('outcome="authorized",reason="none"' in line for line in authorizations)
    assert any('outcome="refused",reason="no_active_subscription"' in line for line in authorizations)
    cost = metric_lines(server, "aibudget_cost_micro_usd_total")
    letter = [line for line in cost if 'operation="letter",priced_as="gpt-4o-mini"' in line]
    assert letter
    assert float(letter[0].rsplit(" ", 1)[1]) >= 390  # 1000 in x 0.15 + 400 out x 0.60 USD/M = 390 µUSD


def test_the_request_id_is_echoed_or_made(server: Server) -> None:
    with server.client(**{"X-Request-Id": "trace-abc-123"}) as client:
        assert client.get("/healthz").headers["x-request-id"] == "trace-abc-123"
    for insane in ("x" * 129, "two words", '{"forged": "json"}'):
        with server.client(**{"X-Request-Id": insane}) as client:
            made = client.get("/healthz").headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_logs_are_json_lines_without_keys_device_ids_or_metadata(server: Server, service_key: str) -> None:
    headers = {"X-Device-Id": DEVICE, "X-Request-Id": "trace-logs-1"}
    authorization = {"request_id": "obs-req-log-1", "operation": "letter", "model": "gpt-4o-mini"}
    settle = {"request_id": "obs-req-log-1", "operation": "letter", "model": "gpt-4o-mini",
              "usage": {"input_tokens": 10, "output_tokens": 5}, "meta": {"note": META_VALUE}}  # fmt: skip
    with server.client(service_key, **headers) as client:
        assert client.post("/v1/authorizations", json=authorization).status_code == 201
        assert client.post("/v1/usage", json=settle).status_code == 201
        bad_meta = {**settle, "request_id": "obs-req-log-2", "meta": {"note": [META_VALUE]}}
        assert client.post("/v1/usage", json=bad_meta).status_code == 422
    with server.client(service_key + "tampered", **headers) as client:
        assert client.post("/v1/authorizations", json=authorization).status_code == 401
    time.sleep(0.2)  # the server's stderr is line-buffered; give the last lines a moment

    logs = server.logs()
    for secret in (service_key, server.admin_key, DEVICE, META_VALUE):
        assert secret not in logs
    entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    mine = [entry for entry in entries if entry.get("request_id") == "trace-logs-1"]
    assert [(entry["method"], entry["route"], entry["status"]) for entry in mine] == [
        ("POST", "/v1/authorizations", 201), ("POST", "/v1/usage", 201), ("POST", "/v1/usage", 422),
        ("POST", "/v1/authorizations", 401),
    ]  # fmt: skip
    for entry in mine:
        assert {"time", "level", "request_id", "method", "route", "status", "duration_ms"} <= entry.keys()
        assert entry["level"] == "INFO"
        assert isinstance(entry["duration_ms"], float)


def test_other_log_lines_are_scrubbed_of_keys_and_sql_parameters() -> None:
    key = "aib_0123456789abcdef_" + "s" * 43
    try:
        raise RuntimeError(f"(sqlite3.IntegrityError)\n[SQL: INSERT ...]\n[parameters: ('{META_VALUE}', 7)]")
    except RuntimeError as exc:
        message, args = "failed with %s and Bearer %s", (key, "tok-123")
        record = logging.LogRecord(
            "aibudget.api.errors", logging.ERROR, __file__, 1, message, args, (type(exc), exc, None)
        )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert (entry["level"], entry["logger"]) == ("ERROR", "aibudget.api.errors")
    for secret in (key, "tok-123", META_VALUE):
        assert secret not in line
    assert "[parameters: redacted]" in entry["exception"]
