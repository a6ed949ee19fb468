"""`os_reason`: the one way the clients put an OSError in words."""

from __future__ import annotations

import errno
import socket
import ssl

from dmds.client.oserrors import os_reason


def test_an_errno_is_said_in_words_without_the_address() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)")
    assert os_reason(refused) == "Connection refused"


def test_a_timeout_without_errno_says_timed_out() -> None:
    assert os_reason(TimeoutError()) == "timed out"


def test_a_name_that_does_not_resolve_keeps_the_resolver_text() -> None:
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert os_reason(unknown) == "Name or service not known"


def test_tls_failures_say_why_the_certificate_was_refused() -> None:
    failed = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    failed.verify_message = "self-signed certificate"
    assert os_reason(failed) == "self-signed certificate"


def test_other_errors_are_their_own_text_or_name() -> None:
    assert os_reason(None) == ""
    assert os_reason(ValueError("bad frame")) == "bad frame"
    assert os_reason(OSError()) == "OSError"
