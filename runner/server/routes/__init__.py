"""One router per resource; each route calls `runner.api` with what the service holds."""
