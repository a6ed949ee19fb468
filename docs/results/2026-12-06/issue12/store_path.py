"""The store's message path for instruction counts: N messages stored with keys, read back three
times in pages of 1,000. Run under `valgrind --tool=callgrind` with N and with 0; compare totals."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from dmds.core.model import User
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore


async def main(count: int) -> None:
    store = await SqliteStore.open(Path(tempfile.mkdtemp()), StoreSettings(sync=SyncMode.NORMAL))
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias, "01/01/2000"))
    limits = {"max_stored": 10**6, "max_stored_bytes": 10**9}
    sends = [store.add_message("ana", "bob", f"m {n}", now=1.0, key=f"k{n}", **limits) for n in range(count)]
    await asyncio.gather(*sends)
    for _ in range(3):
        after = 0
        while page := await store.pending("bob", after, 1000):
            after = page[-1].seq
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
