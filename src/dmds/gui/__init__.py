"""The desktop client of dmds (`dmds gui`), Qt through PySide6.

`window.MainWindow` is the window; `worker.SessionWorker` runs the network side (an asyncio loop
in a thread of its own) and reports to the window through a Qt signal; `conversations` groups
messages per peer and matches delivery receipts; `dialogs` and `settings` do what they say.
Importing this package imports Qt: the `dmds` command imports it only for `dmds gui`.
"""

from dmds.gui.app import run_gui

__all__ = ["run_gui"]
