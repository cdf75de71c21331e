"""Every default of runner in one place, and the environment variables that change them."""

from __future__ import annotations

DATABASE_URL_ENV = "RUNNER_DATABASE_URL"
"""Any SQLAlchemy URL; unset means SQLite in `.runner/runner.db` under the current folder."""

LOG_FORMAT_ENV = "RUNNER_LOG_FORMAT"
"""`console` (default, for people) or `json` (one JSON object a line, for machines)."""

DEFAULT_CONCURRENCY = 8
"""Tasks of one execution running at once when neither the flow nor `--concurrency` says."""

DEBUG_ENV = "RUNNER_DEBUG"
"""Set to 1 to see the Python traceback of an internal error instead of one line."""
