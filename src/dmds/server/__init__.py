"""The wiring of a server process, above every layer it assembles.

`lifecycle.py` builds a process from its settings (the store engine `--store` names, the core, the
classic, session, web and admin front-ends, the purge and collection timers), owns its signals and
stops it gracefully; `reload.py` applies the settings a SIGHUP reads again; `control.py` serves the
data dir's Unix socket through which `dmds backup` has the running server copy its SQLite store.
"""
