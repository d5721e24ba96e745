"""Opening a local HTML file in Debian's Chromium through Playwright, recording what a user would
not see: console errors and uncaught page errors. Skips without Chromium or Playwright, except
under CI (CI=true), where it fails."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage"]


def chromium() -> str:
    """Debian's Chromium, or skip (fail under CI: there the browser tests must run)."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is not installed (pip install -e '.[test]')"
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if problem is None and exe is None:
        problem = "chromium is not installed (apt-get install chromium; scripts/test.sh does it)"
    if problem:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"browser test cannot run in CI: {problem}")
        pytest.skip(problem)
    return exe  # type: ignore[return-value]


@contextmanager
def chromium_page() -> Iterator[tuple[object, list[str]]]:
    """(a new page, the list its console errors and page errors are appended to)."""
    exe = chromium()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            yield page, errors
        finally:
            browser.close()
