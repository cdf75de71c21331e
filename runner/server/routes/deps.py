"""What routes share: the service of the app, and calling blocking `runner.api` code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import Depends, Request

from runner.server.service import Service

T = TypeVar("T")


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(service_of)]
"""A route's parameter `service: ServiceDep` is the app's service."""


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call (the store, the engine) off the event loop."""
    return await to_thread.run_sync(lambda: function(*args, **kwargs))
