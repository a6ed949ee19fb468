"""`/healthz` and `/readyz`, for load balancers and orchestrators (no token).

`/healthz` is liveness: the event loop ran this handler, so the process serves. `/readyz` is
readiness: the store answers a trivial read within `ready_timeout_s` (through its queue, so a
store too busy to answer that fast is not ready either; with PostgreSQL this is the database being
reachable on the writing connection), every listener is open, and with PostgreSQL the LISTEN
connection is up (without it this node would not hear of the others' messages). 503 otherwise,
with a JSON body naming what failed.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dmds.admin.app import Admin


async def healthz(request: Request, admin: Admin) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request, admin: Admin) -> Response:
    failed: dict[str, str] = {}
    try:
        await asyncio.wait_for(admin.store.ping(), admin.ready_timeout_s)
    except TimeoutError:
        failed["store"] = f"no answer within {admin.ready_timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - whatever the store raised is the answer
        failed["store"] = str(exc) or type(exc).__name__
    for name, listener in admin.listeners.items():
        if not listener.serving:
            failed[name] = "not listening"
    if admin.cluster is not None and not admin.cluster.listening:
        failed["listen"] = "the LISTEN connection to PostgreSQL is down (reconnecting)"
    if failed:
        return JSONResponse({"status": "not ready", "failed": failed}, status_code=503)
    return JSONResponse({"status": "ready"})
