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
