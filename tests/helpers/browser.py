"""Headless Chromium (Debian's `chromium` and `chromium-driver`) through Selenium, for the
tests that open the HTML reports the way a person would."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

# Skipped on a machine without them, never in CI (.ci/run installs them).
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)")


def open_page(path: str, screenshot: str = "") -> dict:
  """Loads the file at `path`; returns its visible text, its tables' cell texts, every
  image's natural size and whether it loaded, the console's errors, and (to `screenshot`) a
  PNG of the whole page."""
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--window-size=1280,900"):
    options.add_argument(argument)
  options.binary_location = CHROMIUM
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  try:
    driver.get(f"file://{path}")
    page = driver.execute_script("""
      return {
        text: document.body.innerText,
        tables: [...document.querySelectorAll('table')].map(
            t => [...t.rows].map(r => [...r.cells].map(c => c.innerText))),
        images: [...document.images].map(
            i => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight,
                   complete: i.complete})),
        links: [...document.links].map(a => a.getAttribute('href')),
        height: document.documentElement.scrollHeight};""")
    page["console_errors"] = [entry["message"] for entry in driver.get_log("browser")
                              if entry["level"] == "SEVERE"]
    if screenshot:
      driver.set_window_size(1280, min(page["height"] + 100, 16000))
      driver.save_screenshot(screenshot)
    return page
  finally:
    driver.quit()
