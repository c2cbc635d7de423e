"""Where the package reads and writes: local paths and URIs such as gs://bucket/run.

Local paths are made absolute once, when a command starts, because orbax refuses relative checkpoint
directories (its first save fails with "Checkpoint path should be absolute") and because a relative
path would otherwise mean different places for code that changes directory. URIs pass unchanged.
"""

from __future__ import annotations

import os
import re

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """True for `scheme://...` paths (gs://, s3://, ...), which are not on the local disk."""
    return bool(_URI.match(path))


def resolve(path: str) -> str:
    """An absolute local path (`~` expanded), or the URI itself."""
    if not path or is_uri(path):
        return path
    return os.path.abspath(os.path.expanduser(path))
