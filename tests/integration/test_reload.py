"""SIGHUP reads the settings again: the live ones change at once, the TLS certificate is read again
from its files, the others wait for a restart and the log says which."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from dmds.client.session import SessionClient, SessionError
from dmds.protocols.session.codes import ErrorCode
from tests.conftest import FAST, ServerFactory, ServerProcess

PASSWORD = "a long enough password"


def _issue(ca: trustme.CA, cert_path: Path, key_path: Path) -> bytes:
    """A new certificate for localhost into the files; returns its DER bytes."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def _served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _hangup(server: ServerProcess, marker: str, seen: int) -> None:
    """SIGHUP, then wait for the `seen`+1-th line with `marker` in the log."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log().count(marker) <= seen:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)


async def _sends(port: int, context: ssl.SSLContext, count: int) -> list[str]:
    """`count` sends at once from ana to bob: "ok" or the error code's name, each."""
    client = await SessionClient.connect("127.0.0.1", port, ssl=context, server_hostname="localhost")
    await client.login("ana", PASSWORD)
    results = await asyncio.gather(
        *(client.send("bob", f"m{n}") for n in range(count)), return_exceptions=True
    )
    await client.close()
    out = []
    for result in results:
        if isinstance(result, SessionError):
            out.append(result.code.name)
        else:
            assert not isinstance(result, BaseException), result
            out.append("ok")
    return out


async def test_sighup_applies_live_settings_and_a_renewed_certificate(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = _issue(ca, cert_path, key_path)
    config = tmp_path / "dmds.toml"
    config.write_text('[delivery]\nmax_send_rate = 1000.0\nsend_burst = 5000\n[server]\nlog_level = "INFO"\n')
    tls = ("--tls-cert", str(cert_path), "--tls-key", str(key_path))
    server = server_factory(*FAST, *tls, "--config", str(config))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    port = server.session_port
    for alias in ("ana", "bob"):
        client = await SessionClient.connect("127.0.0.1", port, ssl=context, server_hostname="localhost")
        await client.register(alias, f"User {alias}", "01/02/2000", PASSWORD)
        await client.close()
    assert _served_certificate(port, context) == first
    assert await _sends(port, context, 5) == ["ok"] * 5

    # A renewal in place, a lower send rate, a log level, and one setting that needs a restart.
    second = _issue(ca, cert_path, key_path)
    assert second != first
    config.write_text(
        '[delivery]\nmax_send_rate = 0.001\nsend_burst = 2\n[server]\nlog_level = "DEBUG"\n'
        "[classic]\nmax_text_bytes = 1000\n"
    )
    await asyncio.to_thread(_hangup, server, "SIGHUP: settings reloaded", 0)
    log = server.log()
    assert "log_level DEBUG" in log
    assert "max_send_rate 0.001, send_burst 2" in log
    assert "TLS certificate" in log
    assert "taking effect at the next restart: classic.max_text_bytes" in log
    assert _served_certificate(port, context) == second
    assert await _sends(port, context, 4) == ["ok", "ok", ErrorCode.LIMIT_EXCEEDED.name, "LIMIT_EXCEEDED"]

    # Settings that are not valid, or a certificate file that is broken: nothing changes.
    config.write_text("[delivery]\nmax_send_rate = -1\n")
    await asyncio.to_thread(_hangup, server, "SIGHUP: settings not reloaded", 0)
    config.write_text('[delivery]\nmax_send_rate = 0.001\nsend_burst = 2\n[server]\nlog_level = "DEBUG"\n')
    cert_path.write_text("not a certificate")
    await asyncio.to_thread(_hangup, server, "TLS certificate not reloaded", 0)
    assert _served_certificate(port, context) == second
    assert server.stop() == 0


@pytest.mark.parametrize("flag", [False, True], ids=["from-the-file", "flag-given"])
async def test_a_flag_outranks_the_file_on_reload(
    server_factory: ServerFactory, tmp_path: Path, flag: bool
) -> None:
    config = tmp_path / "dmds.toml"
    config.write_text("[delivery]\nmax_send_rate = 1000.0\n")
    extra = ("--max-send-rate", "1000") if flag else ()
    server = server_factory(*FAST, "--config", str(config), *extra)
    config.write_text("[delivery]\nmax_send_rate = 5.0\n")
    await asyncio.to_thread(_hangup, server, "SIGHUP: settings reloaded", 0)
    [line] = [line for line in server.log().splitlines() if "SIGHUP: settings reloaded" in line]
    assert ("max_send_rate 5" in line) is not flag
