"""Screenshot the manager dashboard with headless Chromium (Debian's /usr/bin/chromium).

    .venv/bin/python bench/dashboard_screenshot.py http://127.0.0.1:8765 1 docs/img/dashboard.png

Signs in through the login form as dash-manager (bench/dashboard_demo.py), waits until
dashboard.js has drawn every panel, and writes a full-page PNG. Uses the ``playwright``
package only as a driver: its own browser download (``playwright install``) is not needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue_bench.py would shadow the standard library's queue module for a script run from bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from playwright.sync_api import sync_playwright  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def main(base: str, project_id: int, out: str, username: str = "dash-manager") -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, device_scale_factor=1)
        page.goto(f"{base}/accounts/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", f"{username}-pw")
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{base}/projects/{project_id}/dashboard/?target_accuracy=0.9")
        page.wait_for_selector("body[data-dashboard-loaded='1']", timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
