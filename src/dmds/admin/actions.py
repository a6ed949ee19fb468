"""The admin port's user commands and live settings, as JSON endpoints (listed in `commands.ROUTES`).

Reads are GET; actions are POST or DELETE. Each goes through the core's `Operator` (the `Service`
and the store), which logs it, naming the admin request's peer. An alias is the last part of a path
(URL-encoded: an alias may hold a "/"). Answers: 200 with JSON, 400 for a bad value, 404 for an
unknown user, 503 if the store failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dmds.admin.app import Admin
from dmds.core.model import Presence
from dmds.core.operator import Operator
from dmds.core.ports import Store
from dmds.core.validation import check_alias
from dmds.errors import DmdsError, InvalidField, StoreError, UnknownUser

log = logging.getLogger(__name__)

#: Users per page of GET /admin/users, unless `limit` says fewer.
MAX_PAGE = 1000
#: Settings that POST /admin/settings/NAME changes while serving (until the next restart).
LIVE_SETTINGS = ("log_level", "max_send_rate", "send_burst")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def actor(request: Request) -> str:
    peer = request.client
    return f"admin {peer.host}:{peer.port}" if peer is not None else "admin"


def _operator(admin: Admin) -> Operator:
    return Operator(admin.service, admin.store)


async def _answer(work: Callable[[], Awaitable[Any]]) -> Response:
    """Run `work`; its result as JSON, or the error as a status and {"error": ...}."""
    try:
        return JSONResponse(await work())
    except UnknownUser as exc:
        return JSONResponse({"error": f"no such user: {exc}"}, status_code=404)
    except (InvalidField, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except StoreError as exc:
        return JSONResponse({"error": f"the store failed: {exc}"}, status_code=503)
    except DmdsError as exc:
        return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=409)


def _where(entry: Presence | None) -> dict[str, Any]:
    if entry is None:
        return {"was_online": False}
    return {
        "was_online": True,
        "node": entry.node or None,
        "protocol": "classic" if entry.classic else "session",
    }


def _alias(request: Request) -> str:
    return str(request.path_params["alias"])


# -- the commands, as the admin port and `dmds admin` on a stopped server both run them ------------------


async def list_users(operator: Operator, prefix: str, after: str, limit: int) -> dict[str, Any]:
    """A page of users in alias order; `next` is the `after` of the following page (None: last)."""
    if not 0 < limit <= MAX_PAGE:
        raise InvalidField(f"limit: between 1 and {MAX_PAGE}")
    page = await operator.users(prefix, after, limit)
    found = [dataclasses.asdict(user) for user in page]
    return {"users": found, "next": page[-1].alias if len(page) == limit else None}


async def show_user(operator: Operator, alias: str) -> dict[str, Any]:
    try:
        return dataclasses.asdict(await operator.user(alias))
    except UnknownUser:
        if await operator.is_blocked(alias):
            raise UnknownUser(f"{alias} (the alias is blocked)") from None
        raise


async def delete_user(operator: Operator, alias: str, who: str) -> dict[str, Any]:
    info = await operator.delete(alias, who)
    return {"deleted": info.alias, "stored_messages": info.stored_messages}


async def disconnect_user(operator: Operator, alias: str, who: str) -> dict[str, Any]:
    return {"alias": alias, **_where(await operator.disconnect(alias, who))}


async def block_alias(operator: Operator, alias: str, who: str) -> dict[str, Any]:
    check_alias(alias)  # an alias nobody could register needs no block
    done = await operator.block(alias, who)
    where = _where(done.was_online)
    return {"alias": done.alias, "newly": done.newly, "registered": done.registered, **where}


async def unblock_alias(operator: Operator, alias: str, who: str) -> dict[str, Any]:
    return {"alias": alias, "unblocked": await operator.unblock(alias, who)}


async def list_blocked(store: Store, prefix: str) -> dict[str, Any]:
    found = await store.blocked(prefix, MAX_PAGE)
    return {"blocked": [{"alias": alias, "blocked_at": at} for alias, at in found]}


# -- the admin port's handlers ------------------------------------------------------------------------


async def users(request: Request, admin: Admin) -> Response:
    """GET /admin/users?prefix=P&after=A&limit=N"""

    async def work() -> dict[str, Any]:
        q = request.query_params
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise InvalidField("limit: not a number") from None
        return await list_users(_operator(admin), q.get("prefix", ""), q.get("after", ""), limit)

    return await _answer(work)


async def user(request: Request, admin: Admin) -> Response:
    """GET /admin/users/ALIAS"""
    return await _answer(lambda: show_user(_operator(admin), _alias(request)))


async def delete(request: Request, admin: Admin) -> Response:
    """DELETE /admin/users/ALIAS: the account and everything stored for it."""
    return await _answer(lambda: delete_user(_operator(admin), _alias(request), actor(request)))


async def disconnect(request: Request, admin: Admin) -> Response:
    """DELETE /admin/connections/ALIAS: end the user's connections, on whichever node."""
    return await _answer(lambda: disconnect_user(_operator(admin), _alias(request), actor(request)))


async def blocked(request: Request, admin: Admin) -> Response:
    """GET /admin/blocked?prefix=P: the blocked aliases (registered or not)."""
    return await _answer(lambda: list_blocked(admin.store, request.query_params.get("prefix", "")))


async def block(request: Request, admin: Admin) -> Response:
    """POST /admin/blocked/ALIAS"""
    return await _answer(lambda: block_alias(_operator(admin), _alias(request), actor(request)))


async def unblock(request: Request, admin: Admin) -> Response:
    """DELETE /admin/blocked/ALIAS"""
    return await _answer(lambda: unblock_alias(_operator(admin), _alias(request), actor(request)))


def _live(admin: Admin) -> dict[str, Any]:
    delivery = admin.service.delivery
    return {
        "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        "max_send_rate": delivery.max_send_rate,
        "send_burst": delivery.send_burst,
    }


async def settings(request: Request, admin: Admin) -> Response:
    """GET /admin/settings: the settings that can change live, as they are now."""
    return JSONResponse(_live(admin))


async def set_setting(request: Request, admin: Admin) -> Response:
    """POST /admin/settings/NAME with {"value": V}: in force at once, until the next restart."""

    async def work() -> dict[str, Any]:
        name = str(request.path_params["name"])
        if name not in LIVE_SETTINGS:
            raise InvalidField(f"{name}: not a setting that can change live ({', '.join(LIVE_SETTINGS)})")
        try:
            value = json.loads(await request.body())["value"]
        except (ValueError, KeyError, TypeError):
            raise InvalidField('the body must be JSON: {"value": ...}') from None
        who = actor(request)
        if name == "log_level":
            level = str(value).upper()
            if level not in LOG_LEVELS:
                raise InvalidField(f"log_level: one of {', '.join(LOG_LEVELS)}")
            before = _live(admin)["log_level"]
            logging.getLogger().setLevel(level)
            log.warning(  # WARNING: said whatever the new level
                "%s: set log_level %s (was %s)", who, level, before,
                extra={"actor": who, "action": "set", "setting": "log_level"},
            )  # fmt: skip
        else:
            current = admin.service.delivery
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidField(f"{name}: a number, not {value!r}")
            if name == "send_burst" and value != int(value):
                raise InvalidField("send_burst: a whole number")
            rate, burst = current.max_send_rate, current.send_burst
            if name == "send_burst":
                burst = int(value)
            else:
                rate = float(value)
            # The settings' own checks (ValueError: 400).
            dataclasses.replace(current, max_send_rate=rate, send_burst=burst)
            _operator(admin).set_send_rate(rate, burst, who)
        return _live(admin)

    return await _answer(work)
