"""Screenshots of every page of the web UI, for docs/screenshots/ and the README.

    python ui/screenshots.py                  # writes docs/screenshots/*.png
    python ui/screenshots.py --out /tmp/shots

Needs what the UI's browser tests need (a Docker engine with debian:bookworm-slim,
Debian's chromium, Playwright for Python: `bash .ci/prepare.sh`). It starts a real
`runner serve` on the demo flows of ui/demo/flows in a temporary folder, runs a few
executions there (a success from the form's inputs, a failure, a paused one, a running
one, 200 matrix runs) and photographs each page in a headless Chromium.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration import browser as ui  # noqa: E402
from tests.integration.helpers import Cli  # noqa: E402
from tests.integration.serving import Server, running_server  # noqa: E402

WIDTH, HEIGHT = 1360, 860


def start(server: Server, flow: str, **kwargs: object) -> str:
    answer = server.post(f"/executions/demo/{flow}", **kwargs)  # type: ignore[arg-type]
    assert answer.status_code == 201, answer.text
    execution_id: str = answer.json()["id"]
    return execution_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    problem = ui.browser_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runner-shots-") as scratch:
        folder = Path(scratch)
        flows = ui.copy_demo_flows(folder / "flows")
        cli = Cli(cwd=folder, db_url=f"sqlite:///{folder / 'runner.db'}")
        csv = folder / "trips.csv"
        csv.write_text("id,name\n" + "".join(f"{i},trip {i}\n" for i in range(1, 201)))
        with running_server(cli, flows) as server:
            with csv.open("rb") as data:
                ingest = start(
                    server, "ingest", data={"region": "eu", "rows": "120"}, files={"data": data}
                )
            flaky = start(server, "flaky", json={})
            deploy = start(server, "deploy", json={})
            chatty = start(server, "chatty", json={})
            fanout = ui.record_fanout(cli.db_url, flows)
            for execution_id, state in (
                (ingest, "SUCCESS"),
                (flaky, "FAILED"),
                (deploy, "PAUSED"),
                (chatty, "SUCCESS"),
            ):
                server.wait_state(execution_id, state)
            slow = start(server, "slow", json={})
            server.wait_state(slow, "RUNNING")
            time.sleep(3)

            with sync_playwright() as playwright:
                browser = ui.launch(playwright)
                anonymous = browser.new_context(
                    base_url=server.url, viewport={"width": WIDTH, "height": 520}
                )
                page = anonymous.new_page()
                page.goto("/ui/flows")
                page.screenshot(path=args.out / "login.png")
                anonymous.close()

                context = ui.logged_in(
                    browser, server.url, server.token, viewport={"width": WIDTH, "height": HEIGHT}
                )
                page = context.new_page()

                def shoot(name: str, path: str, ready: str, *, full: bool = True) -> None:
                    page.goto(path)
                    page.wait_for_selector(ready)
                    page.wait_for_timeout(800)  # the first poll and the log stream settle
                    page.screenshot(path=args.out / f"{name}.png", full_page=full)
                    print(f"{name}.png  {path}")

                shoot("flows", "/ui/flows", "#flows table")
                shoot("flow", "/ui/flows/demo/ingest", "#run-form form")
                shoot("executions", "/ui/executions", "#executions tbody tr")
                shoot("execution-failed", f"/ui/executions/{flaky}?task=load", "main[data-ready]")
                shoot("execution-success", f"/ui/executions/{ingest}", "main[data-ready]")
                shoot("execution-paused", f"/ui/executions/{deploy}", "#resume form")
                shoot("execution-matrix", f"/ui/executions/{fanout}", "main[data-ready]")
                page.goto(f"/ui/executions/{chatty}")
                expect(page.locator(".log-status")).to_contain_text("Ended")
                page.get_by_label("Search").fill("late line 24")
                page.wait_for_timeout(500)
                page.locator("#logs").screenshot(path=args.out / "logs-search.png")
                print("logs-search.png")
                browser.close()
            for execution_id in (slow, deploy):
                server.post(f"/executions/{execution_id}/kill")
                server.wait_state(execution_id, "KILLED")
        out = cli("gc")  # the workspace the failed execution keeps for a restart
        assert out.returncode == 0, out.stderr
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
