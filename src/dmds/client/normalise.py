"""What a client needs of the SOAP text normaliser before it sends a message.

`dmds.soap.normaliser.Normaliser` is the real one; the shell and the desktop window take anything
with its `anormalise`, so that tests (and programs without the SOAP service) can pass their own.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["TextNormaliser"]


class TextNormaliser(Protocol):
    """What the clients need of `Normaliser`: raises NormaliserUnavailable when it cannot help."""

    async def anormalise(self, text: str) -> str: ...
