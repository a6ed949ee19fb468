"""Checks of what users type, before anything reaches the store: the same rules on every protocol."""

from __future__ import annotations

import datetime
import re

from dmds.errors import InvalidField

# classic.md: DD/MM/YYYY, as the original GUI writes it
_DATE = re.compile(r"(\d\d)/(\d\d)/(\d\d\d\d)", re.ASCII)


#: Longest alias, in characters: at most 256 UTF-8 bytes, the classic protocol's default field
#: limit, so every user can be addressed from both protocols.
MAX_ALIAS_CHARS = 64


def check_alias(alias: str) -> None:
    if not alias:
        raise InvalidField("alias is empty")
    if len(alias) > MAX_ALIAS_CHARS:
        raise InvalidField(f"alias longer than {MAX_ALIAS_CHARS} characters")
    # Aliases are typed in commands and shown in lists: no spaces, no control characters.
    # isprintable() is False for every control and separator character except " ".
    if not alias.isprintable() or " " in alias:
        raise InvalidField("alias contains spaces or control characters")


def check_registration(full_name: str, alias: str, birth_date: str) -> None:
    check_alias(alias)
    if not full_name.strip():
        raise InvalidField("full name is empty")
    if "\0" in full_name:
        # Never from the classic protocol (NUL ends its fields); PostgreSQL's text cannot hold it.
        raise InvalidField("full name contains a NUL character")
    check_birth_date(birth_date, datetime.date.today())


def check_text(text: str, key: str | None = None) -> None:
    if "\0" in text:
        # The classic protocol ends fields with NUL: such a text could never be pushed to a
        # classic user.
        raise InvalidField("text contains a NUL character")
    if key is not None and "\0" in key:
        raise InvalidField("message key contains a NUL character")


def check_chunk(offset: int, received: int, size: int, length: int) -> int:
    """An upload's next chunk of `length` bytes at `offset`, after `received` of its announced
    `size`: the upload's new length, or InvalidField (chunks come in order and never pass the size).
    Both store engines apply it inside the transaction that writes the chunk."""
    if offset != received:
        raise InvalidField(f"chunk at offset {offset}, expected {received}")
    if received + length > size:
        raise InvalidField(f"upload passes its announced size of {size} bytes")
    return received + length


def check_birth_date(text: str, today: datetime.date) -> None:
    # A regex and date() rather than strptime(), which costs tens of microseconds per REGISTER.
    match = _DATE.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        day, month, year = (int(g) for g in match.groups())
        born = datetime.date(year, month, day)
    except ValueError:
        raise InvalidField(f"birth date {text!r} is not a date as DD/MM/YYYY") from None
    if born > today:
        raise InvalidField("birth date is in the future")
