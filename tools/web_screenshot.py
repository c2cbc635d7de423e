r"""Saves a screenshot of grace_jax.serve's result page for docs/web.md.

  python tools/web_screenshot.py --workdir=runs/demo --out=docs/web_screenshot.png

Needs a run trained on SynthFER (its demo clips are what the page shows: the README's demo run is one)
and Chromium with its driver (apt-get install chromium chromium-driver). Starts the server on a free
local port, runs the demo clip of --clip_class (the first demo clip the model classifies correctly
when that class's clip is not), pauses the video mid-way and saves the page.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grace_jax.infra import cli  # noqa: E402
from grace_jax.infra.errors import UserError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo", help="a run trained on SynthFER")
    parser.add_argument("--out", default="docs/web_screenshot.png")
    parser.add_argument("--clip_class", default="happiness", help="the demo clip of this class, when right")
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args()
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(path):
            raise UserError(f"{path}: not found; apt-get install -y chromium chromium-driver")
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from grace_jax.inference import Predictor
    from grace_jax.serve import server

    predictor = Predictor(args.workdir, face_crop="none", faces="largest")
    srv = server.build(predictor, workdir=args.workdir, port=0, faces="largest", window_seconds=0.5)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        demos = sorted(srv.settings.demos)
        if not demos:
            raise UserError(f"--workdir={args.workdir}: no demo clips (not a run trained on SynthFER)")
        demo = _pick(srv, predictor, demos, args.clip_class)
        options = webdriver.ChromeOptions()
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        options.add_argument(f"--window-size={args.width},1600")
        options.add_argument("--hide-scrollbars")
        options.binary_location = "/usr/bin/chromium"
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        try:
            driver.get(srv.url)
            wait = WebDriverWait(driver, 300, poll_frequency=0.2)
            wait.until(lambda d: d.find_elements("css selector", "#demo-list button.demo"))
            for button in driver.find_elements("css selector", "#demo-list button.demo"):
                if button.text == demo:
                    button.click()
            wait.until(lambda d: d.find_element("id", "result").is_displayed())
            wait.until(lambda d: d.execute_script("return document.getElementById('video').readyState") >= 2)
            wait.until(lambda d: d.execute_script("return document.querySelector('img.heatmap').naturalWidth") > 0)
            driver.execute_script(
                "const v = document.getElementById('video'); v.pause(); v.currentTime = v.duration * 0.6;"
            )
            time.sleep(1.0)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(args.width, height + 20)
            time.sleep(0.5)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
    finally:
        srv.shutdown()
        server.close(srv)
    print(f"Wrote {args.out} ({demo}).")


def _pick(srv, predictor, demos: list[str], wanted: str) -> str:
    """The demo clip of class `wanted` if the model gets it right, else the first one it gets right."""
    ordered = sorted(demos, key=lambda name: wanted not in name)
    for name in ordered:
        result = predictor(srv.settings.demos[name], faces="largest")
        if result.prediction and result.prediction in name:
            return name
    return ordered[0]


if __name__ == "__main__":
    cli.run_plain(main)
