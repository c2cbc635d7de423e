"""The one exception readers raise for a clip that cannot be used."""

from grace_jax.infra.errors import UserError


class ClipError(UserError):
    """A clip is unusable; the message names the file and the problem and goes into the bad-clip report."""
