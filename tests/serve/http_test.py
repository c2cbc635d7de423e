"""The HTTP API over real sockets on 127.0.0.1: bad uploads, the queue, temporary files; then the real
Predictor on the tiny trained run."""

import csv
import io
import os
import threading
import time

import pytest
from serve_helpers import mp4, request, running, upload

from grace_jax.serve.analysis import Outputs


class FakeWork:
    """Stands in for the model: records where each job's video was, waits for `gate` when it is set."""

    def __init__(self):
        self.gate = None
        self.seen = []

    def __call__(self, job, progress):
        self.seen.append((job.video, os.path.exists(job.video)))
        progress("classifying", 0.5)
        if self.gate is not None:
            assert self.gate.wait(60)
        result = {"input": job.name, "class_names": ["a", "b"], "prediction": "a", "tracks": []}
        return Outputs(result=result, csv="input\n", timeline_png=None, heatmap_pngs={}, heatmap_windows={})


def _wait_for(predicate, seconds=30):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_bad_uploads_get_4xx_and_leave_no_file(tmp_path):
    video = open(mp4(str(tmp_path / "clip.mp4")), "rb").read()
    work = FakeWork()
    with running(work=work, max_upload_mb=1, max_seconds=60) as srv:
        root = srv.settings.root
        # Over the size limit: refused from Content-Length, no body sent at all.
        status, data = request(srv, "POST", "/api/predict?name=big.mp4", headers={"Content-Length": str(2_000_000)})
        assert status == 413 and "up to 1 MB" in data["error"]
        for body, name, status, message in [
            (b"", "empty.mp4", 400, "empty"),
            (b"hello, not a video\n", "notes.mp4", 415, "text file"),
            (video[: len(video) // 2], "cut.mp4", 422, "truncated or damaged"),
        ]:
            got, data = upload(srv, body, name)
            assert (got, message in data["error"]) == (status, True), (name, data)
        # The client's name is a display name only: the file has the server's name inside its root.
        status, data = upload(srv, video, "../../etc/passwd.mp4")
        assert status == 200 and data["input"] == "passwd.mp4"
        status, data = upload(srv, video, "émotion 笑 clip.mp4")
        assert status == 200 and data["input"] == "émotion 笑 clip.mp4"
        assert all(ok and path.startswith(root + os.sep) and path.endswith("/video.mp4") for path, ok in work.seen)
        assert os.listdir(root) == []  # every request's folder deleted once it was answered
        status, data = request(srv, "POST", "/api/predict", body=b"x", headers={"Content-Length": "ten"})
        assert status == 400 and "not a number" in data["error"]
        status, data = request(srv, "GET", "/api/jobs/nosuchjob")
        assert status == 404
        status, data = request(srv, "POST", "/api/predict", body=b"x", headers={"Content-Type": "multipart/form-data"})
        assert status == 400 and "boundary" in data["error"]
    status_file = srv.settings.root
    assert not os.path.exists(status_file)


def test_queue_positions_and_503_when_full(tmp_path):
    video = open(mp4(str(tmp_path / "clip.mp4")), "rb").read()
    work = FakeWork()
    work.gate = threading.Event()
    with running(work=work, queue_size=1) as srv:
        status, first = upload(srv, video, "one.mp4", "&wait=0")
        assert status == 202
        _wait_for(lambda: request(srv, "GET", f"/api/jobs/{first['id']}")[1]["state"] == "running")
        status, second = upload(srv, video, "two.mp4", "&wait=0")
        assert status == 202
        status, job = request(srv, "GET", f"/api/jobs/{second['id']}")
        assert job["state"] == "queued" and job["position"] == 1
        status, data = upload(srv, video, "three.mp4", "&wait=0")
        assert status == 503 and "busy" in data["error"]
        status, running_job = request(srv, "GET", f"/api/jobs/{first['id']}")
        assert running_job["stage"] == "classifying" and running_job["fraction"] == 0.5
        work.gate.set()
        _wait_for(lambda: request(srv, "GET", f"/api/jobs/{second['id']}")[1]["state"] == "done")
        status, data = request(srv, "GET", f"/api/jobs/{second['id']}/result.csv")
        assert status == 200 and data == b"input\n"


def test_multipart_upload(tmp_path):
    video = open(mp4(str(tmp_path / "clip.mp4")), "rb").read()
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="video"; filename="my clip.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + video + b"\r\n--b0undary--\r\n"
    )
    with running(work=FakeWork()) as srv:
        status, data = request(
            srv, "POST", "/api/predict", body=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
        )
        assert status == 200 and data["input"] == "my clip.mp4"


@pytest.mark.slow
def test_real_predictor_over_http(tiny_run, synthfer_dir, tmp_path):
    """The page's whole API with the tiny run's model: a SynthFER demo clip and an upload."""
    from grace_jax.inference import Predictor

    workdir, _ = tiny_run
    predictor = Predictor(workdir, face_crop="none", faces="largest")
    with running(predictor, workdir=workdir, window_seconds=1.0, faces="largest") as srv:
        status, info = request(srv, "GET", "/api/info")
        assert info["class_names"] == predictor.class_names and info["demos"], info
        demo = info["demos"][0]
        status, job = request(srv, "POST", f"/api/demo?name={demo}&wait=0&view=1")
        assert status == 202
        _wait_for(lambda: request(srv, "GET", f"/api/jobs/{job['id']}")[1]["state"] in ("done", "failed"), 300)
        status, done = request(srv, "GET", f"/api/jobs/{job['id']}")
        assert done["state"] == "done", done
        result = done["result"]
        assert result["input"] == demo and result["prediction"] in predictor.class_names
        track = result["tracks"][0]
        assert track["windows"][0]["crop_boxes"] and track["windows"][0]["probabilities"]
        for link in ("json", "csv", "timeline", "video", "strip"):
            status, data = request(srv, "GET", done["links"][link])
            assert status == 200, link
        status, data = request(srv, "GET", done["links"]["heatmaps"]["0"])
        assert status == 200 and data[:4] == b"\x89PNG"
        rows = list(csv.reader(io.StringIO(request(srv, "GET", done["links"]["csv"])[1].decode())))
        assert all(demo == row[0] for row in rows[1:])
        # The page has the video: the request's folder goes.
        assert request(srv, "POST", f"/api/jobs/{job['id']}/release")[0] == 200
        assert request(srv, "GET", done["links"]["video"])[0] == 410
        # The same clip uploaded through the synchronous API gives the same answer.
        video = open(srv.settings.demos[demo], "rb").read()
        status, same = upload(srv, video, "again.mp4")
        assert status == 200 and same["prediction"] == result["prediction"] and same["input"] == "again.mp4"
        assert os.listdir(srv.settings.root) == []
