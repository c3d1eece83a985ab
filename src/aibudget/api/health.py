"""Operations routes, without authentication: liveness, readiness and Prometheus metrics.

- `GET /healthz` answers as long as the process serves requests; it touches nothing else.
- `GET /readyz` runs `SELECT 1` on the database: 503 (problem+json) while it does not answer, so a
  load balancer sends no traffic to a worker that could only fail.
- `GET /metrics` is the Prometheus text exposition (see `api.observability`). It holds no practice,
  device or request ids, but it tells how busy the service is: expose it to your scraper only, e.g.
  by not routing `/metrics` through the public reverse proxy.
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from aibudget.api import errors, observability
from aibudget.api.deps import BudgetDep

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    """Always 200 while the process serves requests; no authentication, no database."""
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: the database answers",
    response_model=Ready,
    responses={503: {"description": "the database does not answer",
                     "content": {errors.PROBLEM_JSON: {}}}},
)  # fmt: skip
def readyz(budget: BudgetDep) -> Response:
    """200 when `SELECT 1` succeeds on the database, 503 problem+json when it does not."""
    try:
        # the one statement outside a repository: it reads nothing, it only proves the database answers
        with budget.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("readiness check failed: %s", type(exc).__name__)
        return errors.problem(
            503, error_code="UNAVAILABLE", title="Database unavailable",
            detail="the database does not answer; retry later",
        )  # fmt: skip
    return Response(Ready().model_dump_json(), media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics (no authentication: expose to your scraper only)",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
)  # fmt: skip
def metrics() -> Response:
    """Request counts and latencies per route template, authorization outcomes, cost per model and
    operation; bounded labels only. Not authenticated, so keep it off the public internet."""
    body, content_type = observability.render_metrics()
    return Response(body, media_type=content_type)
