"""Upload limits and temporary files, without a model or a server."""

import io
import os
import stat

import pytest
from serve_helpers import mp4

from grace_jax.serve import uploads
from grace_jax.serve.uploads import UploadError


@pytest.mark.parametrize(
    "given, shown",
    [
        ("../../etc/passwd.mp4", "passwd.mp4"),
        ("..\\..\\windows\\clip.mp4", "clip.mp4"),
        ("my clip (1).mp4", "my clip (1).mp4"),
        ("émotion 笑.mp4", "émotion 笑.mp4"),
        ("bad\x00\r\nname.mp4", "badname.mp4"),
        ("", "upload"),
        ("..", "upload"),
        (".hidden.mp4", "hidden.mp4"),
    ],
)
def test_display_names_are_never_paths(given, shown):
    assert uploads.display_name(given) == shown
    assert uploads.safe_suffix("../x.MP4") == ".mp4" and uploads.safe_suffix("x.mp4/../../y") == ".bin"


def test_length_is_refused_before_the_body():
    assert uploads.check_length("10", 100) == 10
    for header, status in [(None, 411), ("ten", 400), ("-1", 400), ("0", 400), ("101", 413)]:
        with pytest.raises(UploadError) as e:
            uploads.check_length(header, 100)
        assert e.value.status == status


def test_workspace_is_private_and_removed():
    workspace = uploads.Workspace()
    assert stat.S_IMODE(os.stat(workspace.path).st_mode) == 0o700
    open(workspace.file("video.mp4"), "wb").close()
    workspace.remove()
    assert not os.path.exists(workspace.path)


def test_multipart_file_field(tmp_path):
    boundary = "XyZ"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="video"; filename="../a b.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n\x00\x01--XyZ not the end\r\n--XyZ--\r\n"
    )
    workspace = uploads.Workspace(str(tmp_path))
    path, name = uploads.receive_multipart(io.BytesIO(body), len(body), boundary, workspace)
    assert os.path.dirname(path) == workspace.path and os.path.basename(path) == "video.mp4"
    assert name == "../a b.mp4" and open(path, "rb").read() == b"\x00\x01--XyZ not the end"
    assert os.listdir(workspace.path) == ["video.mp4"]  # the body's copy is gone
    with pytest.raises(UploadError, match="no file field named 'video'"):
        body = b'--XyZ\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--XyZ--\r\n'
        uploads.receive_multipart(io.BytesIO(body), len(body), boundary, uploads.Workspace(str(tmp_path)))
    with pytest.raises(UploadError, match="stopped after 3 of 10 bytes"):
        uploads.receive_raw(io.BytesIO(b"abc"), 10, str(tmp_path / "cut"))


def test_probe_tells_videos_from_the_rest(tmp_path):
    video = mp4(str(tmp_path / "clip.mp4"), frames=16, fps=8)
    assert uploads.probe(video, 120) == pytest.approx(2.0, abs=0.2)
    data = open(video, "rb").read()
    cases = {
        "notes.txt": (b"just some text\n" * 10, 415, "text file"),
        "list.m3u8": (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", 415, "text file"),
        "noise.mp4": (os.urandom(3000).replace(b"\0", b"\1")[:8] + b"\0" + os.urandom(3000), 415, "not a video"),
        "cut.mp4": (data[: len(data) // 2], 422, "truncated or damaged"),
        "empty.mp4": (b"", 400, "empty"),
    }
    for name, (content, status, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(UploadError, match=message) as e:
            uploads.probe(str(path), 120)
        assert e.value.status == status, name
    with pytest.raises(UploadError, match="2 s long; this server takes videos up to 1 s") as e:
        uploads.probe(video, 1)
    assert e.value.status == 413
