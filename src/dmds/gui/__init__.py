"""The desktop client of dmds (`dmds gui`), Qt through PySide6.

`window.MainWindow` is the window; the network side (an asyncio loop in a thread of its own) is
`classic_worker.ClassicWorker` for the classic protocol and `session_worker.SessionWorker` for the
session protocol, both reporting to the window through one Qt signal; `conversations` groups
messages per peer and matches delivery and read receipts; `dialogs` and `settings` do what they
say.
Importing this package imports Qt: the `dmds` command imports it only for `dmds gui`.
"""

from dmds.gui.app import run_gui

__all__ = ["run_gui"]
