"""The HTTP routes: the page, its static files and the JSON API, on http.server.ThreadingHTTPServer.

  GET  /                           the page (grace_jax/serve/page/)
  GET  /api/info                   class names, demo clips, limits
  POST /api/predict?name=clip.mp4  body: the raw video, or multipart/form-data with a file field `video`;
                                   answers the result JSON, or with ?wait=0 {"id": ...} (202)
  POST /api/demo?name=<demo clip>  the same for one of the demo clips (no body)
  GET  /api/jobs/<id>              state, queue position, stage and fraction; the result once done
  GET  /api/jobs/<id>/result.json, result.csv, timeline.png, heatmap/<track>.png, strip.png, video
  POST /api/jobs/<id>/release      the page has the video: its temporary folder goes now

Request threads only receive, check and answer; the model runs on the one worker thread of `jobs.Jobs`.
Job ids are random tokens: a job is only reachable by whoever submitted it.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
from importlib import resources

from grace_jax.serve import uploads
from grace_jax.serve.jobs import Job, Jobs
from grace_jax.serve.uploads import UploadError

PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".ogv": "video/ogg",
    ".ogg": "video/ogg",
    ".avi": "video/x-msvideo",
}
# A refused request's unread body is read and dropped for at most this long before the connection
# closes: closing on unread bytes makes the kernel reset the connection, and the client then sees a
# network error instead of the refusal's message.
DRAIN_SECONDS = 2.0


class Settings:
    """What the handler needs from the command line and the loaded model."""

    def __init__(self, *, class_names, max_upload_mb, max_seconds, faces, window_seconds, demos, jobs):
        self.class_names = list(class_names)
        self.max_bytes = int(max_upload_mb * 1e6)
        self.max_upload_mb = max_upload_mb
        self.max_seconds = max_seconds
        self.faces = faces
        self.window_seconds = window_seconds
        self.demos = demos  # display name -> path of a demo clip
        self.jobs: Jobs = jobs
        self.root = tempfile.mkdtemp(prefix="grace-serve-")  # 0700; every request's folder goes inside

    def info(self) -> dict:
        return {
            "class_names": self.class_names,
            "demos": sorted(self.demos),
            "max_upload_mb": self.max_upload_mb,
            "max_seconds": self.max_seconds,
            "faces": self.faces,
            "window_seconds": self.window_seconds,
        }


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue: a refused upload is never sent at all
    server_version = "grace_jax.serve"
    # A client that stops sending for this long loses its connection (and its place in the queue): a
    # slow trickle of bytes cannot hold one of the few places forever.
    timeout = 60
    settings: Settings  # set on the subclass `make_server` builds

    # --- plumbing -------------------------------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        # The path's query holds the display name only; no body or header is logged.
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _send_file(self, path: str, content_type: str) -> None:
        """A file streamed from disk (videos are up to --max_upload_mb)."""
        with open(path, "rb") as f:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                shutil.copyfileobj(f, self.wfile, uploads.CHUNK)
        self.close_connection = True

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def _drain(self) -> None:
        """Reads and drops what is left of a refused request's body, for at most DRAIN_SECONDS."""
        try:
            left = int(self.headers.get("Content-Length") or 0) - getattr(self, "_body_read", 0)
        except ValueError:
            return  # a length that is not a number was the refusal's reason: nothing to drain by
        expecting = self.headers.get("Expect", "").lower() == "100-continue"
        if left <= 0 or (expecting and not getattr(self, "_continued", False)):
            return  # nothing sent, or the client waits for a 100 Continue it never got
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            self.connection.settimeout(DRAIN_SECONDS)
            while left > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(left, uploads.CHUNK)) if hasattr(self.rfile, "read1") else b""
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _refuse(self, error: UploadError) -> None:
        """The refusal first, then the unread body dropped; a body over the size limit is not read at all."""
        self._error(error.status, str(error))
        if error.status != 413:
            self._drain()

    def handle_expect_100(self):
        # Checked before the client sends the body: too large, or no place in the queue.
        if self.command == "POST" and self.path.startswith("/api/predict"):
            try:
                uploads.check_length(self.headers.get("Content-Length"), self.settings.max_bytes)
            except UploadError as e:
                self._error(e.status, str(e))
                return False
        self._continued = True
        return super().handle_expect_100()

    # --- routes ---------------------------------------------------------------------------------

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        route = url.path
        if route in ("/", "/index.html"):
            return self._page("index.html")
        if route.startswith("/static/"):
            return self._page(route[len("/static/") :])
        if route == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        if route == "/api/info":
            return self._json(200, self.settings.info())
        match = re.fullmatch(r"/api/jobs/([A-Za-z0-9_-]{1,40})(/.*)?", route)
        if match:
            return self._job_get(match.group(1), match.group(2) or "")
        return self._error(404, f"no such page: {route}")

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        try:
            if url.path == "/api/predict":
                return self._predict(query)
            if url.path == "/api/demo":
                return self._demo(query)
            match = re.fullmatch(r"/api/jobs/([A-Za-z0-9_-]{1,40})/release", url.path)
            if match:
                job = self.settings.jobs.get(match.group(1))
                if job is None:
                    return self._error(404, "no such job (finished jobs are forgotten after an hour)")
                self.settings.jobs.release(job)
                return self._json(200, {"released": True})
            return self._refuse(UploadError(404, f"no such API: POST {url.path}"))
        except BrokenPipeError:
            pass

    def _page(self, name: str):
        if name not in PAGE_FILES:
            return self._error(404, f"no such file: {name}")
        body = resources.files("grace_jax.serve").joinpath("page", name).read_bytes()
        return self._send(200, body, PAGE_FILES[name])

    def _predict(self, query):
        settings = self.settings
        wait, view = _flag(query, "wait", True), _flag(query, "view", False)
        try:
            length = uploads.check_length(self.headers.get("Content-Length"), settings.max_bytes)
            content_type = self.headers.get("Content-Type", "")
            multipart = content_type.lower().startswith("multipart/form-data")
            boundary = uploads.boundary_of(content_type) if multipart else None
            if multipart and not boundary:
                raise UploadError(400, "multipart/form-data without a boundary")
            name = uploads.display_name((query.get("name") or [""])[0])
            job = settings.jobs.admit(name, settings.root, view=view)
        except UploadError as e:
            return self._refuse(e)
        try:
            self._body_read = length
            if multipart:
                job.video, client_name = uploads.receive_multipart(self.rfile, length, boundary, job.workspace)
                if client_name:
                    job.name = uploads.display_name(client_name)
            else:
                job.video = job.workspace.file("video" + uploads.safe_suffix(name))
                uploads.receive_raw(self.rfile, length, job.video)
            uploads.probe(job.video, settings.max_seconds)
        except UploadError as e:
            settings.jobs.abandon(job, e)
            return self._error(e.status, f"{job.name}: {e}")
        except OSError as e:  # the client went away mid-upload, or the disk is full
            settings.jobs.abandon(job, UploadError(400, f"the upload failed: {e.strerror or e}"))
            if not isinstance(e, (ConnectionError, TimeoutError)):
                return self._error(500, f"{job.name}: the upload could not be stored: {e.strerror or e}")
            return None
        settings.jobs.submit(job)
        return self._answer(job, wait)

    def _demo(self, query):
        settings = self.settings
        name = (query.get("name") or [""])[0]
        try:
            if name not in settings.demos:
                raise UploadError(404, f"no demo clip named {name!r}")
            job = settings.jobs.admit(name, settings.root, view=_flag(query, "view", False))
        except UploadError as e:
            return self._refuse(e)
        job.video = job.workspace.file("video" + uploads.safe_suffix(name))
        shutil.copyfile(settings.demos[name], job.video)
        settings.jobs.submit(job)
        return self._answer(job, _flag(query, "wait", True))

    def _answer(self, job: Job, wait: bool):
        if not wait:
            return self._json(202, {"id": job.id, "status_url": f"/api/jobs/{job.id}"})
        job.done.wait()
        if job.state != "done":
            return self._error(job.status, f"{job.name}: {job.error}" if job.name not in job.error else job.error)
        return self._json(200, job.outputs.result)

    def _job_get(self, job_id: str, tail: str):
        job = self.settings.jobs.get(job_id)
        if job is None:
            return self._error(404, "no such job (finished jobs are forgotten after an hour)")
        out = job.outputs
        if tail == "":
            return self._json(200, self._status(job))
        if tail == "/video":
            if job.files_removed or not job.video or not os.path.exists(job.video):
                return self._error(410, "this job's video has been deleted")
            return self._send_file(
                job.video, VIDEO_TYPES.get(os.path.splitext(job.video)[1], "application/octet-stream")
            )
        if out is None:
            return self._error(409, f"the job is {job.state}: no result yet")
        stem = _ascii_stem(job.name)
        if tail == "/result.json":
            body = json.dumps(out.result, indent=2).encode()
            return self._send(200, body, "application/json", _attachment(f"{stem}.json", job.name + ".json"))
        if tail == "/result.csv":
            return self._send(
                200, out.csv.encode(), "text/csv; charset=utf-8", _attachment(f"{stem}.csv", job.name + ".csv")
            )
        if tail == "/timeline.png" and out.timeline_png:
            return self._send(200, out.timeline_png, "image/png")
        if tail == "/strip.png" and out.strip_png:
            return self._send(200, out.strip_png, "image/png")
        match = re.fullmatch(r"/heatmap/(\d+)\.png", tail)
        if match and int(match.group(1)) in out.heatmap_pngs:
            return self._send(200, out.heatmap_pngs[int(match.group(1))], "image/png")
        return self._error(404, f"no such file for this job: {tail}")

    def _status(self, job: Job) -> dict:
        status = {
            "id": job.id,
            "name": job.name,
            "state": job.state,
            "position": self.settings.jobs.position(job),
            "stage": job.stage,
            "fraction": job.fraction,
        }
        if job.state == "failed":
            status.update(error=job.error, status=job.status)
        if job.outputs is not None:
            out, base = job.outputs, f"/api/jobs/{job.id}"
            status["result"] = out.result
            status["links"] = {
                "json": f"{base}/result.json",
                "csv": f"{base}/result.csv",
                "timeline": f"{base}/timeline.png" if out.timeline_png else None,
                "heatmaps": {str(t): f"{base}/heatmap/{t}.png" for t in out.heatmap_pngs},
                "video": None if job.files_removed else f"{base}/video",
                "strip": f"{base}/strip.png" if out.strip_png else None,
            }
            status["heatmap_windows"] = {str(t): w for t, w in out.heatmap_windows.items()}
            status["strip"] = out.strip
        return status


def _flag(query, name: str, default: bool) -> bool:
    values = query.get(name)
    return default if not values else values[0].lower() not in ("0", "false", "no", "")


def _ascii_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(name)[0]).strip("._")
    return stem or "result"


def _attachment(ascii_name: str, name: str) -> dict:
    quoted = urllib.parse.quote(name, safe="")
    return {"Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, settings: Settings):
        self.settings = settings
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, handler)

    def server_close(self):
        super().server_close()
        self.settings.jobs.close()
        shutil.rmtree(self.settings.root, ignore_errors=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


def make_server(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> Server:
    """A server for `settings` bound to (host, port); port 0 picks a free one (see `.url`)."""
    handler = type("BoundHandler", (Handler,), {"settings": settings})
    return Server((host, port), handler, settings)
