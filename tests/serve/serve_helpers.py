"""What the serve tests share: small videos, a server on a free port, and raw HTTP requests."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.parse

import numpy as np

from grace_jax.serve import demos, server


def mp4(path: str, frames: int = 16, size: int = 32, fps: int = 8) -> str:
    """A small H.264 clip of noise (even sides: 4:2:0)."""
    rng = np.random.default_rng(0)
    demos.write_mp4(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), fps=fps)
    return path


@contextlib.contextmanager
def running(predictor=None, **options):
    """A server on 127.0.0.1 and a free port, serving on a thread; closed (files removed) at exit."""
    srv = server.build(predictor, host="127.0.0.1", port=0, **options)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        server.close(srv)
        thread.join(5)


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON or raw bytes) of one request over a fresh connection."""
    host, port = srv.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data


def upload(srv, data: bytes, name: str, query: str = ""):
    return request(srv, "POST", f"/api/predict?name={urllib.parse.quote(name)}{query}", body=data)
