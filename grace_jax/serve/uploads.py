"""Uploads: size and duration limits, private temporary folders, display names, video probing.

Every upload is refused with an `UploadError` (an HTTP status and a message the page shows) as early as
possible: its size from Content-Length before a byte of the body is read, its type and duration from
the container's header before the model sees it. Files land only in a folder made by
`tempfile.mkdtemp` (mode 0700) under a server-chosen name; the client's file name is kept as a display
string and never becomes a path.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import tempfile
import unicodedata

# Read the body in pieces this large: a 200 MB upload never sits in memory whole.
CHUNK = 1 << 20

# Demuxers a probe may pick. Text formats (HLS and ffconcat playlists, SDP) make the demuxer open
# other files or URLs named inside the upload; image formats are not videos. Anything not listed is
# refused before the model's reader opens the file.
VIDEO_FORMATS = frozenset(
    "mov,mp4,m4a,3gp,3g2,mj2 matroska,webm avi mpeg mpegts flv ogg asf h264 hevc mjpeg m4v rawvideo "
    "gif dv yuv4mpegpipe nut ivf".split()
)


class UploadError(Exception):
    """An upload this server refuses: `status` is the HTTP code, the message is shown as it is."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def display_name(name: str | None, default: str = "upload") -> str:
    """The client's file name made safe to show and to write into JSON and CSV: the last path part
    (either slash), control characters dropped, at most 120 characters. Never used as a path."""
    name = (name or "").replace("\\", "/").split("/")[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip(".")
    return name[:120] or default


def safe_suffix(name: str) -> str:
    """`.mp4` for `clip.MP4`: the extension helps the demuxer guess raw streams; anything that is not
    1-8 letters and digits becomes `.bin`."""
    match = re.search(r"\.([A-Za-z0-9]{1,8})$", name)
    return f".{match.group(1).lower()}" if match else ".bin"


def check_length(content_length: str | None, max_bytes: int) -> int:
    """The body's announced length, refused before reading it: absent (411), not a number (400),
    empty (400) or over `max_bytes` (413)."""
    if content_length is None:
        raise UploadError(411, "the request has no Content-Length: send the video as one body of known length")
    try:
        length = int(content_length)
    except ValueError:
        raise UploadError(400, f"Content-Length {content_length!r} is not a number") from None
    if length < 0:
        raise UploadError(400, f"Content-Length {length} is negative")
    if length == 0:
        raise UploadError(400, "the upload is empty: choose a video file")
    if length > max_bytes:
        raise UploadError(
            413, f"the upload is {length / 1e6:.1f} MB; this server takes videos up to {max_bytes / 1e6:g} MB"
        )
    return length


class Workspace:
    """One request's private folder (mode 0700); `remove()` deletes it and everything in it."""

    def __init__(self, root: str | None = None):
        self.path = tempfile.mkdtemp(prefix="grace-serve-", dir=root)  # mkdtemp makes it 0700

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def receive_raw(rfile, length: int, path: str) -> None:
    """Copies exactly `length` body bytes into `path`; a body cut short is a 400."""
    left = length
    with open(path, "xb") as out:
        while left:
            chunk = rfile.read(min(CHUNK, left))
            if not chunk:
                raise UploadError(400, f"the upload stopped after {length - left} of {length} bytes")
            out.write(chunk)
            left -= len(chunk)


def boundary_of(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    return match.group(1) if match else None


def receive_multipart(rfile, length: int, boundary: str, workspace: Workspace, field: str = "video") -> tuple[str, str]:
    """The file part named `field` of a multipart/form-data body -> (path of its bytes, its client
    file name). The body goes to disk first and is cut there (mmap), never held in memory."""
    body = workspace.file("body")
    receive_raw(rfile, length, body)
    delimiter = b"--" + boundary.encode("latin-1")
    try:
        with open(body, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            position = data.find(delimiter)
            while position >= 0:
                headers_start = position + len(delimiter)
                if data[headers_start : headers_start + 2] == b"--":
                    break  # the closing delimiter
                headers_end = data.find(b"\r\n\r\n", headers_start)
                if headers_end < 0:
                    break
                headers = data[headers_start:headers_end].decode("utf-8", "replace")
                content_start = headers_end + 4
                following = data.find(b"\r\n" + delimiter, content_start)
                if following < 0:
                    raise UploadError(400, "the multipart body is cut short (no closing boundary)")
                disposition = re.search(r"(?im)^content-disposition:(.*)$", headers)
                name = re.search(r'\bname="([^"]*)"', disposition.group(1)) if disposition else None
                if name and name.group(1) == field:
                    filename = re.search(r'\bfilename="([^"]*)"', disposition.group(1))
                    out = workspace.file("video" + safe_suffix(filename.group(1) if filename else ""))
                    with open(out, "xb") as target:
                        for start in range(content_start, following, CHUNK):
                            target.write(data[start : min(start + CHUNK, following)])
                    return out, filename.group(1) if filename else ""
                position = following + 2
    finally:
        os.remove(body)
    raise UploadError(400, f"the form has no file field named {field!r}")


def probe(path: str, max_seconds: float) -> float | None:
    """Checks that `path` is a video this server reads and not longer than `max_seconds`; returns its
    duration in seconds (None when the container does not say and counting packets fails)."""
    import av  # the server's other modules start without PyAV

    size = os.path.getsize(path)
    if size == 0:
        raise UploadError(400, "the upload is empty: choose a video file")
    with open(path, "rb") as f:
        head = f.read(4096)
    if _looks_like_text(head):
        raise UploadError(415, "this is a text file, not a video")
    try:
        container = av.open(path, options={"format_whitelist": ",".join(sorted(_demuxer_names()))})
    except Exception:  # PyAV raises a family of FFmpeg errors; the file's signature tells them apart
        if _video_signature(head):
            raise UploadError(
                422, "the file starts like a video but cannot be read: it is truncated or damaged"
            ) from None
        raise UploadError(415, "not a video this server can read (no known video container in the file)") from None
    with container:
        if not container.streams.video:
            raise UploadError(415, "the file has no video stream (audio only, or not a video)")
        stream = container.streams.video[0]
        duration = None
        if container.duration:
            duration = container.duration / 1e6
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif stream.frames and stream.average_rate:
            duration = stream.frames / float(stream.average_rate)
    if duration is not None and duration > max_seconds:
        raise UploadError(413, f"the video is {duration:.0f} s long; this server takes videos up to {max_seconds:g} s")
    return duration


def _demuxer_names() -> set[str]:
    # FFmpeg's whitelist wants demuxer names, and "mov,mp4,..." is one demuxer listed under several.
    return {part for name in VIDEO_FORMATS for part in name.split(",")} | {"mov"}


def _video_signature(head: bytes) -> bool:
    """The first bytes of MP4/MOV, Matroska/WebM, AVI, MPEG-PS/TS, FLV, Ogg and ASF files."""
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")
        or head.startswith((b"\x1aE\xdf\xa3", b"FLV", b"OggS", b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75"))
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47)
    )


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multibyte character cut by the 4096-byte read is still text
            return False
    return True
