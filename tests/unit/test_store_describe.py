"""How messages name a database: where libpq really connects (`?host=`, `?port=`).

`_describe` is a pure function of the URL; if the store module moves, so does this test.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from runner.store.engine import describe as _describe


@pytest.mark.parametrize(
    ("url", "described"),
    [
        (
            "postgresql+psycopg://u:pw@/runner?host=127.0.0.1&port=1",
            "postgresql database 'runner' at 127.0.0.1:1",
        ),
        (
            "postgresql+psycopg://u:pw@db:5433/runner?host=x",
            "postgresql database 'runner' at x:5433",
        ),
        (
            "postgresql+psycopg://u:pw@/runner?host=a&host=b&port=1&port=2",
            "postgresql database 'runner' at a:1 or b:2",
        ),
        ("postgresql+psycopg://u:pw@/r?host=a,b&port=7", "postgresql database 'r' at a:7 or b:7"),
        (
            "postgresql+psycopg://u:pw@/r?host=/var/run/postgresql",
            "postgresql database 'r' at the socket in /var/run/postgresql (port 5432)",
        ),
        ("postgresql+psycopg://u:pw@db/runner", "postgresql database 'runner' at db:5432"),
        ("postgresql+psycopg://u:pw@/runner", "postgresql database 'runner' at localhost:5432"),
        ("sqlite:////x/runner.db", "sqlite database '/x/runner.db'"),
    ],
)
def test_the_database_is_named_where_libpq_connects(url: str, described: str) -> None:
    assert _describe(make_url(url)) == described
    assert "pw" not in _describe(make_url(url))
