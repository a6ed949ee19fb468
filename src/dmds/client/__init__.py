"""Client side of dmds: libraries that speak to a dmds (or original) server.

`dmds.client.classic` is the asyncio client of the classic protocol (`shared/protocol/classic.md`),
used by the command-line shell (`dmds client`) and usable by other programs.
"""
