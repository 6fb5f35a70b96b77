"""Headless Chromium for the browser tests, through the Debian chromedriver (never Selenium Manager: the
machine is offline). `make browser` installs the packages chromium and chromium-driver."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# No first-run page, updates, sync or proxy: nothing reaches for the network.
ARGUMENTS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
)


@contextlib.contextmanager
def headless_chromium(root: Path, window_size: str, page_load_timeout: float) -> Iterator[Any]:
    """A Selenium driver with its profile and chromedriver log in ``root``; skips the test when Chromium or
    its driver is missing."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("chromium and chromium-driver are not installed; run `make browser`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (*ARGUMENTS, f"--window-size={window_size}", f"--user-data-dir={root / 'profile'}"):
        options.add_argument(argument)
    options.ignore_local_proxy_environment_variables()
    service = Service(executable_path=chromedriver, log_output=str(root / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(page_load_timeout)
    try:
        yield driver
    finally:
        driver.quit()
