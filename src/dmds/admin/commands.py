"""The `/admin/...` JSON endpoints. Each is `async def name(request, admin) -> Response`, listed in
ROUTES; `app.py` guards them with the token. Store queries go through the Store port."""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dmds.admin import actions
from dmds.admin.app import Admin, Handler
from dmds.errors import StoreError


async def summary(request: Request, admin: Admin) -> Response:
    """Users, who is online, what waits and since when, and the store's size."""
    try:
        found = await admin.store.summary()
    except StoreError as exc:
        return JSONResponse({"error": f"the store failed: {exc}"}, status_code=503)
    oldest = found.oldest_undelivered
    return JSONResponse(
        {
            "users": found.users,
            "online": admin.service.online(),
            "stored_messages": found.stored_messages,
            "stored_bytes": found.stored_bytes,
            "oldest_undelivered": oldest,
            "oldest_undelivered_age_s": None if oldest is None else max(0.0, time.time() - oldest),
            "store_bytes": found.size_bytes,
            "node": admin.service.node_id or None,
        }
    )


#: (path, handler, methods) of every admin command
ROUTES: list[tuple[str, Handler, Sequence[str]]] = [
    ("/admin/summary", summary, ("GET",)),
    ("/admin/users", actions.users, ("GET",)),
    ("/admin/users/{alias:path}", actions.user, ("GET",)),
    ("/admin/users/{alias:path}", actions.delete, ("DELETE",)),
    ("/admin/connections/{alias:path}", actions.disconnect, ("DELETE",)),
    ("/admin/blocked", actions.blocked, ("GET",)),
    ("/admin/blocked/{alias:path}", actions.block, ("POST",)),
    ("/admin/blocked/{alias:path}", actions.unblock, ("DELETE",)),
    ("/admin/settings", actions.settings, ("GET",)),
    ("/admin/settings/{name}", actions.set_setting, ("POST",)),
]
