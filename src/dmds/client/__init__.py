"""Client side of dmds: libraries that speak to a dmds (or original) server.

`dmds.client.classic` is the asyncio client of the classic protocol (`shared/protocol/classic.md`),
used by the command-line shell (`dmds client`) and usable by other programs.

`dmds.client.session` is the asyncio client of the session protocol (one persistent connection,
logins, receipts, presence, history, attachments, reconnection), used by `dmds client --session`;
`dmds.client.blocking` wraps it for programs without asyncio.

What the command-line shell and the desktop window share beside: `dmds.client.normalise` (what they
need of the SOAP text normaliser) and `dmds.client.oserrors` (an OSError put in words).
"""

from dmds.client.blocking import Client
from dmds.client.session import ConnectionLost, SessionClient, SessionClientError, SessionError

__all__ = ["Client", "ConnectionLost", "SessionClient", "SessionClientError", "SessionError"]
