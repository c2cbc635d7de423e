"""The exceptions readers raise for data that cannot be used."""

from grace_jax.infra.errors import UserError


class ClipError(UserError):
    """A clip is unusable; the message names the file and the problem and goes into the bad-clip report."""


class DamagedShardError(UserError):
    """A shard file cannot be read (flipped bytes, a cut copy): the message names the file and, when a
    read failed, the record. One string argument, so that it pickles from a grain worker process to the
    main process unchanged."""
