"""`runner serve`: an HTTP API over `runner.api`, the flows folder, and the triggers.

    service.py   the long-lived parts of one server (store, backend, worker, flows,
                 triggers) and how they start and drain
    app.py       the ASGI app factory: routers, the token check, errors as JSON
    routes/      one router per resource; each calls `runner.api`, nothing else
    schemas.py   the JSON shapes of requests and answers (they make /openapi.json)
    sse.py       a log stream as Server-Sent Events
    catalog.py   the flows folder, loaded and watched
    triggers.py  the loop that fires schedules and flow triggers
    serve.py     uvicorn, with the grace period of `--grace` on SIGTERM and Ctrl-C

FastAPI and uvicorn are imported by these modules only: `runner --help` does not load them.
"""
