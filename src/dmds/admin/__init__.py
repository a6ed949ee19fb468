"""The admin port: Prometheus metrics, health checks for balancers, and admin commands over HTTP.

`server.py` runs it (a Starlette app on uvicorn inside `dmds serve`'s event loop, as the web port
does), `app.py` routes and guards it (the bearer token), `health.py` answers /healthz and /readyz,
`commands.py` holds the `/admin/...` JSON endpoints, `token.py` makes and reads the token file.
"""
