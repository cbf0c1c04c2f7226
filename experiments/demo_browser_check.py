"""Drive the web demo in a real headless browser: type a caption, press Generate, screenshot.

    t2f-demo ckpt=PATH &                      # serves http://127.0.0.1:7860
    python experiments/demo_browser_check.py "a smiling woman with blond hair" shot.png

Needs Chromium, its driver and Selenium (not t2f dependencies; on Debian:
``apt-get install chromium chromium-driver`` and ``pip install selenium``). Prints how many
images the page shows and its message, and saves the screenshot for a person to look at.
"""

from __future__ import annotations

import argparse
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("caption")
    parser.add_argument("screenshot")
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--driver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(flag)
    options.binary_location = args.chromium
    browser = webdriver.Chrome(service=Service(args.driver), options=options)
    try:
        browser.get(args.url)
        time.sleep(4)  # the page builds itself with JavaScript
        browser.find_element(By.CSS_SELECTOR, "#caption textarea").send_keys(args.caption)
        browser.find_element(By.ID, "generate").click()
        for _ in range(120):
            time.sleep(1)
            if browser.find_elements(By.CSS_SELECTOR, "#faces img") or browser.find_element(By.ID, "message").text:
                break
        time.sleep(2)
        images = len(browser.find_elements(By.CSS_SELECTOR, "#faces img"))
        print(f"images: {images}; message: {browser.find_element(By.ID, 'message').text!r}")
        browser.save_screenshot(args.screenshot)
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
