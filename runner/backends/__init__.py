"""Container backends: where task containers actually run, chosen by name.

`RUNNER_BACKEND` (default `docker`) names one of `BACKENDS`; each entry is the module and
class to import, so that choosing one never imports the others' libraries. A new backend
is a module beside `docker.py` implementing `runner.backends.base.Backend`, with a
`from_env()` class method, and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from runner.errors import UsageError
from runner.settings import BACKEND_ENV, backend_name

if TYPE_CHECKING:
    from runner.backends.base import Backend

BACKENDS: dict[str, str] = {
    "docker": "runner.backends.docker:DockerBackend",
    "swarm": "runner.backends.swarm:SwarmBackend",
}


def create_backend(name: str | None = None) -> Backend:
    """Connect the backend called `name` (default: `RUNNER_BACKEND`, else docker)."""
    chosen = (name or backend_name()).lower()
    target = BACKENDS.get(chosen)
    if target is None:
        raise UsageError(
            f"{BACKEND_ENV}={chosen!r} names no backend; known: {', '.join(sorted(BACKENDS))}"
        )
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class.from_env()
    return backend
