"""Opening a local HTML file or the served page in Debian's Chromium through Playwright, recording
what a user would not see: console errors and uncaught page errors (``chromium_page``, and
``PageWatch`` for the server's page, with the ``browser`` fixture of conftest.py). Skips without
Chromium or Playwright, except under CI (CI=true), where it fails."""
from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: Screenshots and page dumps of the browser tests (at the repository root).
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: The upload limit the browser tests' servers run with (serve's default).
MAX_UPLOAD = 10 * 1024 * 1024
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage"]


def chromium() -> str:
    """Debian's Chromium, or skip (fail under CI: there the browser tests must run)."""
    problem = None
    if importlib.util.find_spec("playwright") is None:
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


def expect(locator):
    """Playwright's polling assertions (they run outside the page, so the page's CSP, which forbids
    eval, does not get in the way as it does for wait_for_function with a string)."""
    from playwright.sync_api import expect as _expect

    return _expect(locator)


class PageWatch:
    """Opens the page and records what a user would not see: console errors, CSP violations,
    uncaught exceptions, and every URL the page fetched."""

    def __init__(self, browser, url: str, width: int = 1200, height: int = 900, locale: str | None = None,
                 path: str = "/") -> None:
        # locale: the browser's language, which it sends as Accept-Language.
        self.page = browser.new_page(viewport={"width": width, "height": height},
                                     **({"locale": locale} if locale else {}))
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url + path)
        self.page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        self.url = url

    def upload(self, path_or_payload) -> None:
        self.page.set_input_files("#file-input", path_or_payload)

    def wait_result(self) -> None:
        self.page.wait_for_selector("#result:not([hidden])", timeout=30_000)

    def check_clean(self, expected_http_errors: int = 0) -> None:
        csp = [c for c in self.console if "Content Security Policy" in c or "Refused to" in c]
        assert not csp, csp
        assert not self.errors, self.errors
        http_errors = [c for c in self.console if "Failed to load resource" in c]
        assert len(http_errors) == expected_http_errors, self.console
        outside = [u for u in self.requests if not u.startswith((self.url, "blob:", "data:"))]
        assert not outside, f"the page fetched something outside the server: {outside}"
        missing = [c for c in self.console if "no message" in c]
        assert not missing, f"the script asked for messages the catalog lacks: {missing}"

    def close(self) -> None:
        self.page.close()
