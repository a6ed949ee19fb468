"""Who is online, on every node, and who wants to hear of it.

The directory is the core's view: with one node it is the truth; with several it mirrors the
cluster's presence table, changed by this node's own connects and disconnects at once and by the
other nodes' through their notifications (well under a second behind on a LAN).
"""

from __future__ import annotations

from collections.abc import Iterator

from dmds.core.model import Presence
from dmds.core.ports import PresenceWatcher


class Directory:
    __slots__ = ("_online", "_watchers")

    def __init__(self) -> None:
        self._online: dict[str, Presence] = {}
        self._watchers: set[PresenceWatcher] = set()

    def get(self, alias: str) -> Presence | None:
        return self._online.get(alias)

    def __contains__(self, alias: str) -> bool:
        return alias in self._online

    def __iter__(self) -> Iterator[str]:
        return iter(self._online)

    def aliases(self) -> list[str]:
        return list(self._online)

    def set(self, entry: Presence) -> None:
        """`entry.alias` is online (or moved to another node): watchers hear of a newcomer only."""
        new = entry.alias not in self._online
        self._online[entry.alias] = entry
        if new:
            self._announce(entry.alias, online=True)

    def remove(self, alias: str) -> bool:
        if self._online.pop(alias, None) is None:
            return False
        self._announce(alias, online=False)
        return True

    def subscribe(self, watcher: PresenceWatcher) -> list[str]:
        self._watchers.add(watcher)
        return list(self._online)

    def unsubscribe(self, watcher: PresenceWatcher) -> None:
        self._watchers.discard(watcher)

    def _announce(self, alias: str, *, online: bool) -> None:
        for watcher in list(self._watchers):
            watcher.presence_changed(alias, online)
