"""A small HTTP client for the admin port: real requests on 127.0.0.1, Prometheus text parsed."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess


def free_port() -> int:
    """A port free now (the admin port cannot be 0: that turns it off)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin_flags() -> tuple[str, str]:
    return ("--admin-port", str(free_port()))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get_sync(port: int, path: str, token: str | None, authorization: str | None = None) -> Answer:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        authorization = f"Bearer {token}"
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


async def get(server: ServerProcess, path: str, *, token: str | None = "") -> Answer:
    """GET `path` on the server's admin port; token "" means the server's own, None none."""
    if token == "":
        token = admin_token(server)
    return await asyncio.to_thread(get_sync, server.admin_port, path, token)


async def get_raw(server: ServerProcess, path: str, authorization: str) -> Answer:
    """GET with this Authorization header as it is."""
    return await asyncio.to_thread(get_sync, server.admin_port, path, None, authorization)


def admin_token(server: ServerProcess) -> str:
    assert server.admin_token_path is not None
    return server.admin_token_path.read_text().strip()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


#: the sample names of each type of metric family
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


async def metric_names(server: ServerProcess) -> set[str]:
    """Every sample name the server exposes, also of families that have no sample yet (a labelled
    counter nobody incremented)."""
    answer = await get(server, "/metrics")
    assert answer.status == 200, answer
    return {
        family.name + suffix
        for family in text_string_to_metric_families(answer.body.decode())
        for suffix in _SUFFIXES[family.type]
    }


async def scrape(server: ServerProcess) -> Samples:
    answer = await get(server, "/metrics")
    assert answer.status == 200, answer
    return parse(answer.body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value, 0 if it is not there (a counter nobody incremented has no labelled sample)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
