"""Byte builders for classic requests and pushes, written independently of the codec under test."""

from __future__ import annotations


def fields(*values: str | bytes) -> bytes:
    return b"".join((v if isinstance(v, bytes) else v.encode()) + b"\0" for v in values)


def register(full_name: str, alias: str, birth_date: str) -> bytes:
    return fields("REGISTER", full_name, alias, birth_date)


def unregister(alias: str) -> bytes:
    return fields("UNREGISTER", alias)


def connect(alias: str, port: int | str) -> bytes:
    return fields("CONNECT", alias, str(port))


def disconnect(alias: str) -> bytes:
    return fields("DISCONNECT", alias)


def send(sender: str, recipient: str, text: str) -> bytes:
    return fields("SEND", sender, recipient, text)


def connected_users(alias: str) -> bytes:
    return fields("CONNECTEDUSERS", alias)
