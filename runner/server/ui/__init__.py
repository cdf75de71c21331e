"""The web UI of `runner serve`, served by the same process under /ui.

    pages.py      the pages: HTML shells (templates/) whose scripts use the HTTP API
    session.py    the session cookie (the API token, HttpOnly, SameSite=Strict) and CSRF
    templates/    Jinja2 templates of the pages
    static/       CSS, the pages' scripts (plain ES modules, no build step) and the
                  vendored libraries with their licenses (static/vendor/, see ui/README.md)

Everything the browser loads is served from static/: no CDN, no Node.js at run time.
"""

from runner.server.ui.pages import UI_PREFIX, create_ui

__all__ = ["UI_PREFIX", "create_ui"]
