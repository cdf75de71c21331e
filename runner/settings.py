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

DB_RETRY_SECONDS_ENV = "RUNNER_DB_RETRY_SECONDS"
"""How long a write keeps being retried while the database is unreachable (its connection
dropped, the server restarts, SQLite stays locked) before the run ends with an error;
`0` turns retrying off. Default `DEFAULT_DB_RETRY_SECONDS`."""

DEFAULT_DB_RETRY_SECONDS = 60.0
"""Seconds of one database outage that runs survive (see `DB_RETRY_SECONDS_ENV`)."""

DB_RETRY_FIRST_S = 0.2
DB_RETRY_MAX_S = 5.0
"""Pause before the first retry of a failed write, doubling up to `DB_RETRY_MAX_S`."""

DEFAULT_ARTIFACTS_DIR = ".runner/artifacts"
"""Where `artifacts:` of tasks are copied, as ARTIFACTS_DIR/EXECUTION/TASK/ (`--artifacts-dir`)."""

ARTIFACTS_DIR_ENV = "RUNNER_ARTIFACTS_DIR"

HEARTBEAT_SECONDS_ENV = "RUNNER_HEARTBEAT_SECONDS"
"""How often the process running an execution renews its lease and looks for a kill
request from another process (`runner kill`). Default `DEFAULT_HEARTBEAT_SECONDS`."""

DEFAULT_HEARTBEAT_SECONDS = 2.0

LEASE_SECONDS_ENV = "RUNNER_LEASE_SECONDS"
"""How long an execution's lease lasts without a heartbeat before another `runner`
command takes it to be orphaned (its runner died on another machine) and recovers it.
A runner on the same machine whose process is gone is noticed at once. Default
`DEFAULT_LEASE_SECONDS`."""

DEFAULT_LEASE_SECONDS = 30.0

QUEUE_POLL_SECONDS = 1.0
"""How often a QUEUED execution checks whether its flow has a free slot."""
