"""Routes that serve the built web client beside the `/session` WebSocket.

`/` is the page, revalidated on every load (its ETag changes with each build); `/assets/` holds the
script and style under names that carry a hash of their content, so they are cached for a year and a
new build is seen at once. Every response carries a Content-Security-Policy that allows the page's
own script, style and WebSocket and nothing else (no inline script, no other origin): the page loads
nothing from outside the dmds server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).with_name("static")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:;"
    " connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["cache-control"] = IMMUTABLE
        return response


async def _page(request: Request) -> Response:
    index = STATIC / "index.html"
    if not index.is_file():
        return PlainTextResponse("the web client is not built: run `make web`", status_code=503)
    body = index.read_bytes()  # a few KB, and a new build must be seen at once
    headers = {"cache-control": "no-cache", "etag": f'"{hashlib.sha256(body).hexdigest()[:32]}"'}
    if request.headers.get("if-none-match") == headers["etag"]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/html", headers=headers)


class SecurityHeaders:
    """Adds HEADERS to every HTTP response (not to WebSocket handshakes, which have none of these)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/", _page, methods=["GET", "HEAD"]),
        Mount("/assets", app=_Assets(directory=STATIC / "assets", check_dir=False), name="assets"),
    ]


def middleware() -> list[Middleware]:
    return [Middleware(SecurityHeaders), Middleware(GZipMiddleware, minimum_size=512)]
