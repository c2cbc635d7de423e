"""Hugging Face hub names (`owner/name`): a local folder from the hub cache, or one clear error.

Every place that turns a hub name into files (CLIP weights: `model.clip.init`; the tokenizer:
`model.clip.tokenizer`; an exported model: `predict --model`) goes through `snapshot`, and the
trainer's config checks call `check` before any work starts. Without this, a machine without network
meets huggingface_hub's and transformers' retries (five per file, with back-off: minutes of "Retrying
in 8s" lines) before the real problem shows.

The rule: with `HF_HUB_OFFLINE=1` only the hub cache is looked at. Otherwise the endpoint
(`HF_ENDPOINT`, default https://huggingface.co) is probed once per process with a short timeout; if it
cannot be reached, the cache is used when it holds the files, and the error says what to do when it
does not: fetch the folder on a machine with network and pass its path.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import urllib.error
import urllib.request

from grace_jax.infra.errors import UserError

# `owner/name`, as the hub spells repository ids; anything else with a slash is a path.
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
PROBE_TIMEOUT_S = 3.0
_TRUE = ("1", "on", "yes", "true")

# What each use needs from a repository (huggingface_hub's allow_patterns).
CLIP_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


class HubError(UserError):
    """A hub name that cannot be turned into a local folder now; the message says what to do."""


def is_hub_name(value: str) -> bool:
    """True for `owner/name` that is not an existing local path."""
    return bool(HUB_NAME.fullmatch(value)) and not os.path.exists(value)


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (checked again here: it reads it at import)."""
    import huggingface_hub.constants as constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or constants.is_offline_mode()


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


@functools.cache
def _unreachable(url: str) -> str | None:
    try:
        # Any HTTP answer, even an error status, means the hub can be talked to.
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return str(reason) or type(reason).__name__
    return None


def unreachable_reason() -> str | None:
    """None when the endpoint answers within PROBE_TIMEOUT_S, else why not (once per process)."""
    return _unreachable(endpoint())


def _complete(folder: str, patterns: tuple[str, ...]) -> bool:
    files = set(os.listdir(folder))
    if patterns == TOKENIZER_FILES:
        return "tokenizer.json" in files or {"vocab.json", "merges.txt"} <= files
    if patterns == CLIP_FILES:
        return "config.json" in files and any(f.endswith(".safetensors") for f in files)
    return bool(files)  # other uses check their files themselves (hf_export.check_folder)


def cached(name: str, patterns: tuple[str, ...], cache_dir: str | None = None) -> str | None:
    """The snapshot folder of `name` in the hub cache when it holds the files `patterns` need."""
    import huggingface_hub

    try:
        folder = huggingface_hub.snapshot_download(
            name, allow_patterns=list(patterns), local_files_only=True, cache_dir=cache_dir
        )
    except Exception:  # noqa: BLE001 -- any failure here means "not usable from the cache"
        return None
    return folder if os.path.isdir(folder) and _complete(folder, patterns) else None


FETCH_PATTERNS = ("*.json", "*.txt", "*.safetensors")  # configs, vocabularies, weights: not the .bin/.h5 copies


def _fetch_hint(name: str, field: str) -> str:
    local = name.split("/")[-1]
    # `hf download` takes one pattern per --include: further words would be file names.
    include = " ".join(f"--include {shlex.quote(p)}" for p in FETCH_PATTERNS)
    also = " (or an OpenAI .pt file; and --config.model.clip.tokenizer=<folder>)" if field == "model.clip.init" else ""
    python = (
        f"python -c \"from huggingface_hub import snapshot_download; snapshot_download('{name}', "
        f"local_dir='{local}', allow_patterns={list(FETCH_PATTERNS)})\""
    )
    return (
        f"Either fetch it on a machine with network (`hf download {name} {include} --local-dir {local}`, "
        f"or `{python}`), copy the folder here and pass its path as {_flag(field)}=<folder>{also}; or run "
        f"where {endpoint()} can be reached (HF_HUB_OFFLINE unset), which fills the hub cache once."
    )


def _flag(field: str) -> str:
    return field if field.startswith("--") else f"--config.{field}"


def _unavailable(name: str, field: str, patterns: tuple[str, ...], cache_dir: str | None) -> HubError | None:
    """Why `name` can be neither read from the cache nor fetched now; None when one of them works."""
    import huggingface_hub.constants as constants

    if cached(name, patterns, cache_dir) is not None:
        return None
    where = cache_dir or constants.HF_HUB_CACHE
    if offline():
        why = f"HF_HUB_OFFLINE is set and the hub cache ({where}) does not hold it"
    else:
        reason = unreachable_reason()
        if reason is None:
            return None
        why = f"the hub cache ({where}) does not hold it and {endpoint()} cannot be reached ({reason})"
    return HubError(f"{_flag(field)}={name}: {name} is a Hugging Face hub name; {why}. {_fetch_hint(name, field)}")


def check(name: str, field: str, patterns: tuple[str, ...], cache_dir: str | None = None) -> None:
    """Raises HubError at once when `name` can be neither read from the cache nor fetched now."""
    error = _unavailable(name, field, patterns, cache_dir)
    if error is not None:
        raise error


def snapshot(name: str, field: str, patterns: tuple[str, ...], cache_dir: str | None = None) -> str:
    """A local folder holding `patterns` of the hub repository `name`: from the cache, or downloaded
    when the hub can be reached. `field` names the flag or config field the name came from."""
    import huggingface_hub

    check(name, field, patterns, cache_dir)
    folder = cached(name, patterns, cache_dir)
    if folder is not None and (offline() or unreachable_reason() is not None):
        return folder
    try:
        return huggingface_hub.snapshot_download(name, allow_patterns=list(patterns), cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 -- unknown repo, gated repo, auth: all end the same way
        raise HubError(
            f"{_flag(field)}={name}: the hub could not provide it ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})."
        ) from e
