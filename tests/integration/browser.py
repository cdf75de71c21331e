"""A real headless Chromium for the web UI's tests and screenshots: Debian's `chromium`
driven by Playwright for Python (never `playwright install`: no browser is downloaded),
the demo flows of ui/demo, and an execution of 200 matrix runs recorded quickly.

    browser = launch(playwright)              # Debian's chromium, headless, offline flags
    context = logged_in(browser, url, token)  # through the login form, as a person would
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import BASE_IMAGE

REPO = Path(__file__).resolve().parents[2]
DEMO_FLOWS = REPO / "ui" / "demo" / "flows"
CHROMIUM = os.environ.get("RUNNER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI has no user namespace sandbox
    "--disable-background-networking",  # the network is closed: no update or metrics calls
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers and CI machines have a small /dev/shm
]
TIME_ZONE = "Europe/Paris"
"""The browser's zone in the tests: times on the pages are shown in it (UTC on hover)."""


def browser_problem() -> str | None:
    """Why no browser test can run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; see .ci/prepare.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    return None


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def logged_in(browser: Any, url: str, token: str, **options: Any) -> Any:
    """A browser context holding a session: logged in through /ui/login with `token`."""
    settings = {"timezone_id": TIME_ZONE, "viewport": {"width": 1400, "height": 1000}, **options}
    context = browser.new_context(base_url=url, **settings)
    page = context.new_page()
    page.goto("/ui/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/flows")
    page.close()
    return context


def copy_demo_flows(target: Path) -> Path:
    """The demo flows in `target` (created), on this machine's base image."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(DEMO_FLOWS.glob("*.yml")):
        text = path.read_text(encoding="utf-8").replace("debian:bookworm-slim", BASE_IMAGE)
        (target / path.name).write_text(text, encoding="utf-8")
    return target


def record_fanout(db_url: str, flows: Path) -> str:
    """Run demo.fanout (200 matrix runs) with the scripted backend into the database at
    `db_url`: the real scheduler and store record it (task runs, attempts, logs) in
    seconds, where 200 real containers take minutes on 2 cores. What is measured of it is
    the page, which reads it as it would any execution."""
    from runner import api
    from runner.backends.fake import FakeBackend, Script

    loaded = api.load_flow(flows / "fanout.yml")
    # The scripted backend knows a task by its id (RUNNER_TASK_ID), the same for each run.
    scripts = {
        task.id: Script(lines=(f"{task.id} done",), seconds=0.05) for task in loaded.flow.tasks
    }
    store = api.open_store(db_url)
    try:
        result = api.run_flow(loaded, store=store, backend=FakeBackend(scripts), concurrency=16)
    finally:
        store.close()
    return result.execution_id


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
