#!/usr/bin/env python3
"""Drive a real headless Chromium through Selenium, one session, steps read as JSON from stdin.

    echo '[{"open": "http://127.0.0.1:8080/reset-password?token=..."},
           {"fill": {"new_password": "...", "confirm_password": "..."}},
           {"click": "button[type=submit]"}]' | python3 tests/browser/drive.py

Each step answers with what the page then shows, one JSON object per step on stdout:
{"url", "title", "text" (the visible text), "fields" (name -> value of each input; for hidden
and password inputs only "<N characters>")}.
Other steps: {"screenshot": PATH, "width": W, "height": H} saves a PNG of the whole page at that
window size. Needs chromium, chromedriver and selenium; $AUTHD_CHROMEDRIVER and
$AUTHD_CHROMIUM name the binaries when they are not on PATH.
"""

import json
import os
import shutil
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(flag)
    chromium = os.environ.get("AUTHD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        options.binary_location = chromium
    driver = os.environ.get("AUTHD_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def snapshot(driver):
    fields = {}
    for element in driver.find_elements(By.CSS_SELECTOR, "input[name]"):
        value = element.get_attribute("value") or ""
        # Tokens and passwords stay out of the output (it lands in CI logs): only their length.
        if element.get_attribute("type") in ("hidden", "password") and element.get_attribute("name") != "action":
            value = f"<{len(value)} characters>"
        fields[element.get_attribute("name")] = value
    return {
        "url": driver.current_url,
        "title": driver.title,
        "text": driver.find_element(By.TAG_NAME, "body").text,
        "fields": fields,
    }


def main():
    steps = json.load(sys.stdin)
    driver = browser()
    try:
        for step in steps:
            if "open" in step:
                driver.get(step["open"])
            elif "fill" in step:
                for name, value in step["fill"].items():
                    element = driver.find_element(By.NAME, name)
                    element.clear()
                    element.send_keys(value)
            elif "click" in step:
                # A submit loads the next page. Mark this one (a new document starts without the
                # mark) and wait for a loaded page without it; the checks made while the browser
                # is between documents may fail, and are retried.
                driver.execute_script("window.__authdOld = true;")
                driver.find_element(By.CSS_SELECTOR, step["click"]).click()
                WebDriverWait(driver, 15, ignored_exceptions=(WebDriverException,)).until(
                    lambda d: d.execute_script(
                        "return !window.__authdOld && document.readyState === 'complete';"
                    )
                )
            elif "screenshot" in step:
                driver.set_window_size(step.get("width", 1280), step.get("height", 900))
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(step.get("width", 1280), max(height, step.get("height", 900)))
                driver.save_screenshot(step["screenshot"])
            else:
                raise SystemExit(f"drive.py: unknown step {step!r}")
            print(json.dumps(snapshot(driver)), flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
