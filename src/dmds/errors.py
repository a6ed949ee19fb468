"""Domain errors, raised by the core and the stores.

They carry no wire codes: each protocol maps them to its own codes in one table
(`dmds.protocols.classic.codes` for the classic protocol).
"""


class DmdsError(Exception):
    """Base of every error the core raises on purpose."""


class UnknownUser(DmdsError):
    """The alias named is not registered."""


class AliasTaken(DmdsError):
    """REGISTER of an alias that already exists."""


class AlreadyConnected(DmdsError):
    """CONNECT of a user who is connected already."""


class NotConnected(DmdsError):
    """The operation needs the user to be connected, and they are not."""


class InvalidField(DmdsError):
    """A field is syntactically acceptable on the wire but not as a value (empty alias, bad date)."""


class LimitExceeded(DmdsError):
    """A configured limit (stored messages per user, ...) would be passed."""


class StoreError(DmdsError):
    """The store failed (disk full, I/O error, closed): an infrastructure error, not the user's fault."""


class DeliveryFailed(DmdsError):
    """A push could not be handed to the recipient's endpoint; the item stays stored."""


class BadCredentials(DmdsError):
    """Wrong alias or password (which one is not said)."""


class RateLimited(DmdsError):
    """Too many attempts; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadToken(DmdsError):
    """A session token that is unknown, revoked or expired."""


class Forbidden(DmdsError):
    """The operation is not allowed through this protocol (a password-protected alias over classic)."""


class UnknownAttachment(DmdsError):
    """An attachment or upload id that does not exist or is not the caller's."""


class Blocked(DmdsError):
    """The alias is blocked by the server's operator: it cannot log in, CONNECT or be registered."""


class Kicked(DmdsError):
    """The server's operator ended this user's connection (`dmds admin disconnect` or `delete`)."""
