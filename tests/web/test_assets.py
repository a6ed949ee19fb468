"""How the server serves the web client: types, compression, cache headers, the page's CSP."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ServerProcess

MANIFEST = Path(__file__).resolve().parents[2] / "src" / "dmds" / "web" / "static" / "manifest.json"


def get(server: ServerProcess, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.web_port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_the_page_is_revalidated_and_forbids_inline_script(server: ServerProcess) -> None:
    status, headers, body = get(server, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-cache"
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "default-src 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assets = json.loads(MANIFEST.read_text())
    assert f"assets/{assets['app.js']}".encode() in body
    etag = headers["etag"]
    again, _, _ = get(server, "/", **{"If-None-Match": etag})
    assert again == 304


@pytest.mark.parametrize(("name", "media_type"), [("app.js", "javascript"), ("app.css", "text/css")])
def test_hashed_assets_are_cached_for_a_year_and_compressed(
    server: ServerProcess, name: str, media_type: str
) -> None:
    asset = json.loads(MANIFEST.read_text())[name]
    status, headers, body = get(server, f"/assets/{asset}", **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert media_type in headers["content-type"]
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-encoding"] == "gzip"
    plain = gzip.decompress(body)
    assert len(body) < len(plain)
    assert plain == (MANIFEST.parent / "assets" / asset).read_bytes()


def test_unknown_paths_are_404_without_a_listing(server: ServerProcess) -> None:
    assert get(server, "/assets/")[0] == 404
    assert get(server, "/assets/../manifest.json")[0] == 404
    assert get(server, "/nothing")[0] == 404
