"""The local dashboard and control API (`admin = "127.0.0.1:8119"` in a profile).

- activity.py  what the proxy has been doing: recent connections, bytes per exit (no aiohttp)
- snapshot.py  the JSON documents the pages and `/api/` serve, read off the running server
- app.py       the aiohttp.web application: API, live events, and its guards
- pages.py     the page shell, the login form and the login itself, the static files
- control.py   how the CLI finds and talks to a running dashboard (token file, urllib)

Invariants: loopback unless a password is set; a request whose Host is not the admin address is
refused (DNS rebinding); every state-changing request carries the per-run token; the page loads
nothing from outside this machine; recent connections hold site, exit and outcome only — never
paths, queries or bodies — and are bounded in number and age.
"""
