"""The page in a real browser (headless Chromium through selenium) on the tiny trained run."""

import os
import shutil
import threading

import numpy as np
import pytest
from serve_helpers import request, running, upload

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 300  # seconds; the tiny model compiles on the first clip


def chrome():
    """A headless Chromium; a clear failure (never a skip) when it is not installed."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(
            f"the browser test needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install -y chromium chromium-driver (as .ci/run does)"
        )
    os.environ["SE_OFFLINE"] = "true"  # selenium's manager downloads nothing
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1100,1400")
    options.binary_location = CHROMIUM
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait_until(driver, condition, seconds=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: condition(d))


def text(driver, element_id):
    return driver.find_element("id", element_id).text


def shown(driver, element_id):
    return driver.find_element("id", element_id).is_displayed()


def choose(driver, path):
    driver.find_element("id", "file").send_keys(path)


OVERLAY_PIXELS = """
const c = document.getElementById('overlay');
if (!c.width) return 0;
const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < a.length; i += 4) if (a[i]) n++;
return n;
"""


@pytest.mark.slow
def test_page_in_a_browser(tiny_run, tmp_path):
    from grace_jax.inference import Predictor

    workdir, _ = tiny_run
    predictor = Predictor(workdir, face_crop="none", faces="largest")
    # A small upload limit, so that the too-large case needs no large file.
    options = {"max_upload_mb": 0.2, "window_seconds": 1.0, "faces": "largest"}
    with running(predictor, workdir=workdir, **options) as srv:
        demos = srv.settings.demos
        assert demos, "a run trained on SynthFER offers its test clips"
        # The API's answer for every demo clip (named <index>_<true class>.mp4); the page is given one
        # the model gets right when there is one (6 training steps get few right, often none).
        answers = {name: upload(srv, open(path, "rb").read(), name) for name, path in sorted(demos.items())}
        assert all(status == 200 for status, _ in answers.values()), answers
        right = [name for name, (_, r) in answers.items() if r["prediction"] == _true_label(name)]
        demo = (right or sorted(demos))[0]
        expected = answers[demo][1]
        clip = str(tmp_path / "my clip é.mp4")  # spaces and unicode in the name
        shutil.copyfile(demos[demo], clip)

        driver = chrome()
        try:
            driver.get(srv.url)
            wait_until(driver, lambda d: "Classes:" in text(d, "limits"))
            assert len(driver.find_elements("css selector", "#demo-list button.demo")) == len(demos)

            # A good upload: the class the API gives, the timeline, the boxes over the playing video.
            choose(driver, clip)
            wait_until(driver, lambda d: shown(d, "result") or shown(d, "message"))
            assert not shown(driver, "message"), text(driver, "message")
            assert text(driver, "result-title") == f"my clip é.mp4: {expected['prediction']}"
            assert expected["prediction"] in text(driver, "faces")
            if right:
                assert _true_label(demo) in driver.find_element("css selector", "#face-1 .face-title").text
            lines = driver.find_elements("css selector", "#face-1 svg.timeline polyline.line")
            assert sorted(line.get_attribute("data-class") for line in lines) == sorted(predictor.class_names)
            assert driver.find_elements("css selector", "#face-1 svg.timeline rect.top-shade")
            wait_until(driver, lambda d: d.execute_script("return document.getElementById('video').readyState") >= 2)
            driver.execute_script("const v = document.getElementById('video'); v.currentTime = 0.3;")
            wait_until(driver, lambda d: d.execute_script(OVERLAY_PIXELS) > 0, 30)
            heatmap = driver.find_element("css selector", "#face-1 img.heatmap")
            wait_until(driver, lambda d: d.execute_script("return arguments[0].naturalWidth", heatmap) > 0, 30)
            assert driver.find_element("id", "download-csv").get_attribute("href").endswith("/result.csv")
            assert os.listdir(srv.settings.root) == []  # the page fetched the video: its folder is gone

            # Bad uploads: each one's message on the page.
            bad = {
                "notes.mp4": (b"not a video at all\n", "this is a text file, not a video"),
                "cut.mp4": (open(clip, "rb").read()[:400], "truncated or damaged"),
                "big.mp4": (np.full(300_000, 7, np.uint8).tobytes(), "this server takes videos up to 0.2 MB"),
                "empty.mp4": (b"", "the upload is empty"),
            }
            for name, (content, message) in bad.items():
                path = tmp_path / name
                path.write_bytes(content)
                choose(driver, str(path))
                wait_until(driver, lambda d, m=message: m in text(d, "message"), 60)
                assert not shown(driver, "result")

            # Two at once: this tab, a second tab and an API call. The second tab's AVI (MJPEG)
            # cannot play in Chromium: the page falls back to the frame strip.
            avi = str(tmp_path / "clip.avi")
            _write_mjpeg_avi(avi, demos[demo])
            driver.switch_to.new_window("tab")
            driver.get(srv.url)
            wait_until(driver, lambda d: "Classes:" in text(d, "limits"))
            tabs = driver.window_handles
            choose(driver, avi)
            driver.switch_to.window(tabs[0])
            choose(driver, clip)
            api = {}
            thread = threading.Thread(target=lambda: api.update(result=upload(srv, open(clip, "rb").read(), "c.mp4")))
            thread.start()
            wait_until(driver, lambda d: shown(d, "result"))
            assert text(driver, "result-title") == f"my clip é.mp4: {expected['prediction']}"
            driver.switch_to.window(tabs[1])
            wait_until(driver, lambda d: shown(d, "result") or shown(d, "message"))
            assert not shown(driver, "message"), text(driver, "message")
            assert text(driver, "result-title").startswith("clip.avi: ")
            wait_until(driver, lambda d: shown(d, "strip-box"), 30)
            thread.join(WAIT)
            assert api["result"][0] == 200 and api["result"][1]["prediction"] == expected["prediction"]
        finally:
            driver.quit()
        status, _ = request(srv, "GET", "/api/info")
        assert status == 200


def _true_label(demo_name):
    return demo_name.split("_", 1)[1].rsplit(".", 1)[0]


def _write_mjpeg_avi(path, source):
    import av

    with av.open(source) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(path, "w") as container:
        stream = container.add_stream("mjpeg", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuvj420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.slow
def test_page_says_when_the_server_is_busy(tmp_path):
    """A full queue: the page shows the 503's message (the refused body is drained, not reset)."""
    from http_test import FakeWork
    from serve_helpers import mp4

    clip = mp4(str(tmp_path / "clip.mp4"))
    work = FakeWork()
    work.gate = threading.Event()
    with running(work=work, queue_size=0) as srv:
        status, first = upload(srv, open(clip, "rb").read(), "first.mp4", "&wait=0")
        assert status == 202
        driver = chrome()
        try:
            driver.get(srv.url)
            wait_until(driver, lambda d: "Up to" in text(d, "limits"))
            choose(driver, clip)
            wait_until(driver, lambda d: "Server busy: the server is busy" in text(d, "message"), 60)
            work.gate.set()
            choose(driver, clip)
            wait_until(driver, lambda d: shown(d, "result"), 60)
            assert text(driver, "result-title") == "clip.mp4: a"
        finally:
            driver.quit()
