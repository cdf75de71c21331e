"""The web UI's server side, without a browser: pages need a token (header or session
cookie) and send the browser to /ui/login without one; the login form sets an HttpOnly,
SameSite=Strict cookie and only redirects inside the UI; the API takes the cookie, and
requires its CSRF token for anything that changes state; every asset the pages load is
served by the runner and shipped in the wheel (no CDN), the vendored libraries as pinned."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from runner import api
from runner.backends.fake import FakeBackend
from runner.server.app import create_app
from runner.server.service import Service
from runner.server.ui import session
from runner.server.ui.pages import STATIC_DIR, TEMPLATES_DIR

REPO = Path(__file__).resolve().parents[2]
UI_DIR = STATIC_DIR.parent
PAGES = [
    "/ui/flows",
    "/ui/flows/team/hello",
    "/ui/executions",
    "/ui/executions?state=FAILED&label=a:b",
    "/ui/executions/0123456789abcdef0123456789abcdef",
]
HELLO = """\
id: hello
namespace: team
tasks:
  - {id: a, image: i, command: "echo hi"}
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.yml").write_text(HELLO)
    store = api.open_store(f"sqlite:///{tmp_path / 'runner.db'}")
    served = Service(store, FakeBackend(), flows_dir=flows)
    served.start(background=False)
    yield served
    served.close()


@pytest.fixture
def token(service: Service) -> str:
    secret, _ = api.create_token(service.store, "ui")
    return secret


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service), follow_redirects=False) as anonymous:
        yield anonymous


def logged_in(client: TestClient, token: str) -> TestClient:
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    answer = client.post(
        "/ui/login", data={"token": token, "nonce": nonce.group(1), "next": "/ui/flows"}
    )
    assert answer.status_code == 303, answer.text
    return client


# -- the session and its CSRF token (pure) ----------------------------------------------------


def test_the_csrf_token_belongs_to_one_session() -> None:
    one, other = "rnr_" + "a" * 43, "rnr_" + "b" * 43
    assert session.csrf_token(one) == session.csrf_token(one)
    assert session.csrf_token(one) != session.csrf_token(other)
    assert one not in session.csrf_token(one)
    assert session.csrf_matches(one, session.csrf_token(one))
    assert not session.csrf_matches(one, session.csrf_token(other))
    assert not session.csrf_matches(one, None)


def request(method: str, headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": method, "headers": raw, "path": "/"})


def test_the_bearer_header_comes_before_the_cookie() -> None:
    both = {"Authorization": "Bearer rnr_header", "Cookie": f"{session.COOKIE}=rnr_cookie"}
    assert session.presented_token(request("GET", both)) == ("rnr_header", False)
    cookie = {"Cookie": f"{session.COOKIE}=rnr_cookie"}
    assert session.presented_token(request("GET", cookie)) == ("rnr_cookie", True)
    assert session.presented_token(request("GET", {})) == (None, False)


def test_only_unsafe_methods_need_the_csrf_token() -> None:
    token = "rnr_" + "c" * 43
    session.check_csrf(request("GET", {}), token)
    with pytest.raises(session.CsrfError, match="X-CSRF-Token"):
        session.check_csrf(request("POST", {}), token)
    with pytest.raises(session.CsrfError):
        session.check_csrf(request("POST", {"X-CSRF-Token": "0" * 64}), token)
    session.check_csrf(request("POST", {"X-CSRF-Token": session.csrf_token(token)}), token)


# -- pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_a_page_without_a_token_sends_to_the_login_form(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert target.path == "/ui/login"
    assert parse_qs(target.query)["next"] == [path]


@pytest.mark.parametrize("path", PAGES)
def test_a_page_takes_a_bearer_token(client: TestClient, token: str, path: str) -> None:
    answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["cache-control"] == "no-store"
    assert f'content="{session.csrf_token(token)}"' in answer.text


def test_a_revoked_or_wrong_token_is_no_session(
    client: TestClient, token: str, service: Service
) -> None:
    client.cookies.set(session.COOKIE, "rnr_" + "z" * 43)
    assert client.get("/ui/flows").status_code == 303
    client.cookies.set(session.COOKIE, token)
    assert client.get("/ui/flows").status_code == 200
    api.revoke_token(service.store, "ui")
    assert client.get("/ui/flows").status_code == 303
    assert client.get("/api/v1/flows").status_code == 401


def test_the_root_and_ui_go_to_the_flows(client: TestClient) -> None:
    assert client.get("/").headers["location"] == "/ui/flows"
    assert client.get("/ui/").headers["location"] == "/ui/flows"


# -- logging in and out ----------------------------------------------------------------------------


def test_login_sets_a_strict_http_only_cookie_and_goes_back(client: TestClient, token: str) -> None:
    form = client.get("/ui/login?next=/ui/executions%3Fstate%3DFAILED")
    assert form.status_code == 200
    assert "httponly" in form.headers["set-cookie"].lower()
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    answer = client.post(
        "/ui/login",
        data={"token": token, "nonce": nonce.group(1), "next": "/ui/executions?state=FAILED"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/executions?state=FAILED"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(session.COOKIE))
    parts = {p.strip().split("=")[0].lower() for p in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= parts
    assert "samesite=strict" in cookie.lower()
    assert client.get("/ui/flows").status_code == 200
    # Logged in, the login form goes on at once.
    assert client.get("/ui/login?next=/ui/executions").headers["location"] == "/ui/executions"


def test_login_refuses_a_wrong_token_and_a_form_from_elsewhere(
    client: TestClient, token: str
) -> None:
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    wrong = client.post("/ui/login", data={"token": "rnr_" + "q" * 43, "nonce": nonce.group(1)})
    assert wrong.status_code == 401
    assert "invalid token (unknown or revoked)" in wrong.text
    assert session.COOKIE not in wrong.headers.get("set-cookie", "")
    forged = client.post("/ui/login", data={"token": token, "nonce": "not-the-cookie"})
    assert forged.status_code == 400
    assert "expired or came from another site" in forged.text
    empty = client.post("/ui/login", data={"token": "", "nonce": nonce.group(1)})
    assert "runner token create" in empty.text


@pytest.mark.parametrize(
    "wanted",
    ["https://evil.example/ui/flows", "//evil.example/ui/flows", "/api/v1/flows", "/ui\\..\\x", ""],
)
def test_login_goes_nowhere_but_a_page_of_the_ui(
    client: TestClient, token: str, wanted: str
) -> None:
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None
    answer = client.post(
        "/ui/login", data={"token": token, "nonce": nonce.group(1), "next": wanted}
    )
    assert answer.headers["location"] == "/ui/flows"


def test_logout_needs_the_csrf_token_and_ends_the_session(client: TestClient, token: str) -> None:
    logged_in(client, token)
    refused = client.post("/ui/logout", data={"csrf": "0" * 64})
    assert refused.status_code == 403
    assert client.get("/ui/flows").status_code == 200
    answer = client.post("/ui/logout", data={"csrf": session.csrf_token(token)})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    assert client.get("/ui/flows").status_code == 303


# -- the API with the session cookie ------------------------------------------------------------


def test_the_api_takes_the_cookie_and_its_csrf_token_for_changes(
    client: TestClient, token: str
) -> None:
    logged_in(client, token)
    assert client.get("/api/v1/flows").status_code == 200
    refused = client.post("/api/v1/flows/team/hello/pause")
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("missing or wrong X-CSRF-Token header")
    wrong = client.post("/api/v1/flows/team/hello/pause", headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    done = client.post(
        "/api/v1/flows/team/hello/pause", headers={"X-CSRF-Token": session.csrf_token(token)}
    )
    assert done.status_code == 200 and done.json()["paused"] is True


def test_a_bearer_request_needs_no_csrf_token(client: TestClient, token: str) -> None:
    answer = client.post(
        "/api/v1/flows/team/hello/pause", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200


# -- assets: served, shipped, pinned --------------------------------------------------------------


def asset_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def test_every_module_a_page_imports_is_served(client: TestClient, token: str) -> None:
    """The import graph of the pages' scripts, followed from the templates: each file is
    there and served with a JavaScript type (browsers refuse modules served otherwise)."""
    headers = {"Authorization": f"Bearer {token}"}
    pending = [f"/ui/static/js/pages/{p.stem}.js" for p in TEMPLATES_DIR.glob("*.html")]
    pending = [p for p in pending if (STATIC_DIR / p.removeprefix("/ui/static/")).exists()]
    assert len(pending) == 4
    seen: set[str] = set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, url
        assert "javascript" in answer.headers["content-type"], (url, answer.headers["content-type"])
        assert answer.headers["cache-control"] == "no-cache"
        for found in re.findall(r"""(?:import|from)\s*["'](\.{1,2}/[^"']+)["']""", answer.text):
            base = url.rsplit("/", 1)[0]
            parts = (base + "/" + found).split("/")
            resolved: list[str] = []
            for part in parts:
                if part == "..":
                    resolved.pop()
                elif part != ".":
                    resolved.append(part)
            pending.append("/".join(resolved))
    assert "/ui/static/vendor/dagre.esm.js" in seen
    assert "/ui/static/vendor/highlight.core.min.js" in seen
    for css in ("/ui/static/css/runner.css", "/ui/static/favicon.svg"):
        assert client.get(css).status_code == 200


def test_nothing_is_loaded_from_another_site() -> None:
    """No CDN: the templates, styles and our scripts name no other origin."""
    ours = [
        *TEMPLATES_DIR.glob("*.html"),
        *STATIC_DIR.glob("css/*.css"),
        *STATIC_DIR.rglob("js/**/*.js"),
    ]
    assert len(ours) > 10
    for path in ours:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text), path
        assert "@import" not in text, path


def test_every_asset_is_package_data() -> None:
    """`pip install .` ships every file of static/ and templates/."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["runner.server.ui"]
    files = [*asset_files(), *sorted(TEMPLATES_DIR.glob("*"))]
    for path in files:
        relative = path.relative_to(UI_DIR).as_posix()
        assert any(
            fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns
        ), relative


def test_the_vendored_libraries_are_the_pinned_ones_with_their_licenses() -> None:
    vendor = STATIC_DIR / "vendor"
    sums = {}
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip("*")] = digest
    for name, digest in sums.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert {p.name for p in vendor.iterdir()} == {*sums, "SHA256SUMS"}
    versions = (vendor / "VERSIONS.txt").read_text()
    lock = (REPO / "ui" / "package-lock.json").read_text()
    for line in versions.splitlines():
        name, version, _, integrity = line.split()
        assert f'"integrity": "{integrity}"' in lock, name
        assert f'"version": "{version}"' in lock, name
    for license_file in (
        "dagre.LICENSE.txt",
        "graphlib.LICENSE.txt",
        "highlight.js.LICENSE.txt",
        "swagger-ui.LICENSE.txt",
    ):
        assert (
            "Permission" in (vendor / license_file).read_text()
            or "Redistribution" in (vendor / license_file).read_text()
        )
