"""The bad-clip report: one line per skipped clip or list line, with the file and the reason.

After the skipped ones come the clips that were kept although their annotation line gives a frame
count other than the frames on disk; their reason starts with "frame count mismatch (clip kept)" and
says which count was used (the real one).
"""

from __future__ import annotations

from collections.abc import Sequence

from data_prep.sources.clip_spec import BadClip


def write_report(path: str, bad: Sequence[BadClip]) -> None:
    """Writes a TSV with a header: split, source (list file:line or path), path, reason."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("split\tsource\tpath\treason\n")
        for b in bad:
            fields = (b.split, b.source, b.path, b.reason)
            f.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in fields) + "\n")


def read_report(path: str) -> list[BadClip]:
    """Inverse of write_report."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    return [BadClip(*line.split("\t", 3)) for line in lines]


def summarize(bad: Sequence[BadClip], limit: int = 10) -> str:
    """The first `limit` problems as `  <source>: <reason>` lines, plus how many more there are."""
    lines = [f"  {b.source}: {b.reason}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
