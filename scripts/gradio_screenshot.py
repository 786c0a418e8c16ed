"""Screenshot of `axr inference --gradio` after one chat exchange, for docs/inference.md.

Not a test and not a project dependency: it drives a headless Chromium with Playwright.
    python -m venv /tmp/pw && /tmp/pw/bin/pip install playwright   # the driver only
    axr inference examples/smollm2_lora.toml --dataset 1 --gradio &   # serves 127.0.0.1:7860
    /tmp/pw/bin/python scripts/gradio_screenshot.py http://127.0.0.1:7860 docs/img/gradio.png \
        --browser /usr/bin/chromium --message "Name the capital city of the given country. Norway"
`--browser` points at an installed Chromium (`apt install chromium`), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

from playwright.sync_api import Page, sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("output")
    parser.add_argument("--browser", default=None, help="Chromium executable (default: Playwright's own)")
    parser.add_argument("--message", action="append", required=True, help="a chat message; repeat for more")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")
    args = parser.parse_args()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.browser, headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 820}, device_scale_factor=1)
        # Not "networkidle": the page keeps a connection open, and offline its web fonts never load.
        page.goto(args.url, wait_until="load")
        box = page.locator("textarea").first
        box.wait_for(timeout=60_000)
        for message in args.message:
            answers = page.locator(".message.bot, [data-testid='bot']").count()
            box.fill(message)
            box.press("Enter")
            _wait_for_answer(page, answers, args.timeout)
        page.screenshot(path=args.output, full_page=False)
        browser.close()
    print(f"wrote {args.output}")


def _wait_for_answer(page: Page, before: int, timeout: float) -> None:
    """Until a new bot message exists and its text has not changed for 2 s (streaming ended)."""
    bots = page.locator(".message.bot, [data-testid='bot']")
    deadline = time.monotonic() + timeout
    last, stable_since = None, time.monotonic()
    while time.monotonic() < deadline:
        if bots.count() > before:
            text = bots.last.inner_text()
            if text != last:
                last, stable_since = text, time.monotonic()
            elif text.strip() and time.monotonic() - stable_since > 2.0:
                return
        time.sleep(0.25)
    raise SystemExit(f"no finished answer within {timeout:.0f} s")


if __name__ == "__main__":
    main()
