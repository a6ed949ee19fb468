"""The admin port's routes, and the token that guards them.

Every path needs `Authorization: Bearer <token>` except `/healthz` and `/readyz`: load balancers and
orchestrators probe those without credentials, and they say nothing but whether the node serves.
Without the header the answer is 401 (with `WWW-Authenticate: Bearer`), with a wrong token 403.

Adding an admin command: write `async def handler(request, admin) -> Response` in `commands.py` and
list it in `commands.ROUTES` under `/admin/...`; it gets the `Admin` context (service, store,
metrics) and is guarded like everything else here.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dmds.core.ports import Store
from dmds.core.service import Service
from dmds.metrics import Metrics

#: Paths answered without the token (probes of balancers and orchestrators).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class Listener(Protocol):
    """What readiness asks of a front-end: is its socket accepting connections."""

    @property
    def serving(self) -> bool: ...


class Listening(Protocol):
    """What readiness asks of a PostgreSQL cluster: is its LISTEN connection up."""

    @property
    def listening(self) -> bool: ...


@dataclass(eq=False)
class Admin:
    """What the admin handlers may use: one per server process."""

    service: Service
    store: Store
    metrics: Metrics
    registry: CollectorRegistry
    token: str
    ready_timeout_s: float
    #: name -> front-end, for readiness ("classic", "session", "web")
    listeners: dict[str, Listener] = field(default_factory=dict)
    #: the PostgreSQL cluster (its LISTEN connection counts for readiness), or None
    cluster: Listening | None = None
    #: refreshes the gauges read from the store before a scrape
    before_scrape: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[Request, Admin], Awaitable[Response]]


def route(path: str, handler: Handler, admin: Admin, methods: Sequence[str] = ("GET",)) -> Route:
    async def endpoint(request: Request) -> Response:
        return await handler(request, admin)

    return Route(path, endpoint, methods=list(methods), name=handler.__name__)


async def metrics(request: Request, admin: Admin) -> Response:
    if admin.before_scrape is not None:
        await admin.before_scrape()
    return Response(generate_latest(admin.registry), media_type=CONTENT_TYPE_LATEST)


class RequireToken:
    """401/403 for any request outside OPEN_PATHS without the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization")
        if given is None:
            answer = JSONResponse(
                {"error": "this path needs Authorization: Bearer <token> (the admin-token file)"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="dmds-admin"'},
            )
        elif not _bearer(given, self._expected):
            answer = JSONResponse({"error": "wrong admin token"}, status_code=403)
        else:
            await self.app(scope, receive, send)
            return
        await answer(scope, receive, send)


def _bearer(header: bytes, token: bytes) -> bool:
    """`header` is "Bearer <token>" (the scheme in any case, RFC 9110 section 11.1), compared in
    constant time."""
    scheme, _, given = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), token)


def build_app(admin: Admin) -> ASGIApp:
    from dmds.admin import commands, health  # noqa: PLC0415 - they import this module's Admin

    routes = [
        route("/healthz", health.healthz, admin, ("GET", "HEAD")),
        route("/readyz", health.readyz, admin, ("GET", "HEAD")),
        route("/metrics", metrics, admin),
        *(route(path, handler, admin, methods) for path, handler, methods in commands.ROUTES),
    ]
    return RequireToken(Starlette(routes=routes), admin.token)
