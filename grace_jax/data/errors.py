"""The one exception readers raise for a clip that cannot be used."""


class ClipError(Exception):
    """A clip is unusable; the message names the file and the problem and goes into the bad-clip report."""
