"""XLA:CPU numerics: XLA's YNNPACK ("ynn") fusion is off by default for grace_jax.

jaxlib 0.10.2 (the version setup.py pins) sends more of a program to XLA:CPU's YNNPACK fusion than
0.10.1 did (reductions and the elementwise ops feeding them, not only dots), and that path has known
miscompilations: jax-ml/jax#39103, jit silently returns a wrong sum (a vmapped matrix-vector product
followed by a reduction, off by 2e-3 relative; 0.10.1 is correct), and jax-ml/jax#39257 / #40412,
the process crashes or hangs on rank-7/8 multiply-reduce fusions (still present in 0.11.0). Both
reproduce here, and `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=` (an empty list of fusion
types: no ynn fusion) makes both go away. `tests/infra/numerics_test.py` keeps the reproduction.

Importing `grace_jax` (so also `python -m grace_jax.main` and `python -m grace_jax.predict`, whose
parent package is imported first) calls `apply()`, which appends that flag to `XLA_FLAGS` in
`os.environ`. XLA reads `XLA_FLAGS` once, when jax starts its first backend, so this works whenever
grace_jax is imported before the first jax computation (importing jax earlier is fine); child
processes (grain workers, subprocesses) inherit the environment. It never overrides a user's own
value of the flag: if `XLA_FLAGS` (or a `--flagfile` it names) already mentions
`--xla_cpu_experimental_ynn_fusion_type`, with any value, nothing is changed. Opt out with
`GRACE_JAX_KEEP_YNN_FUSION=1`, which keeps XLA's default.

Only XLA:CPU reads the flag: on GPU/TPU it is harmless, and it still applies there to the
computations jax runs on its host CPU backend. It is added only for jaxlib >= 0.10.2, the first
release with the bugs: older ones compute correctly, and a flag an older XLA did not know would be
fatal to it.
Cost: see benchmarks/cpu_numerics.py and the README's "CPU numerics" section.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import warnings

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
OFF = FLAG + "="  # an empty list of fusion types: no ynn fusion at all
OPT_OUT_ENV = "GRACE_JAX_KEEP_YNN_FUSION"
FIRST_AFFECTED_JAXLIB = (0, 10, 2)

# What `apply()` did to os.environ, for logs: "added", "user-set", "opted-out", "jaxlib <version>",
# "no jaxlib", or "not applied".
status = "not applied"


def _tokens(xla_flags: str) -> list[str]:
    try:
        return shlex.split(xla_flags)
    except ValueError:  # unbalanced quotes: XLA will complain itself; look at plain words
        return xla_flags.split()


def _names_flag(token: str) -> bool:
    name = token.lstrip("-").split("=", 1)[0]
    return token.startswith("-") and name == FLAG.lstrip("-")


def mentions_flag(xla_flags: str) -> bool:
    """Whether `xla_flags` sets the ynn fusion flag, directly or in a --flagfile it names."""
    for token in _tokens(xla_flags):
        if _names_flag(token):
            return True
        if token.lstrip("-").startswith("flagfile="):
            path = token.split("=", 1)[1]
            try:
                with open(os.path.expanduser(path)) as f:
                    if any(_names_flag(t) for t in _tokens(f.read())):
                        return True
            except OSError:
                pass  # XLA reports an unreadable flagfile itself
    return False


def with_fusion_off(xla_flags: str) -> str:
    """`xla_flags` with the ynn fusion turned off, unless it already sets the flag."""
    if mentions_flag(xla_flags):
        return xla_flags
    return f"{xla_flags} {OFF}".strip()


def _jaxlib_version() -> tuple[int, int, int] | None:
    from importlib import metadata

    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)  # 0.10.2, 0.11.0rc1, 0.12
    return tuple(int(g or 0) for g in match.groups()) if match else None


def _backend_started() -> bool:
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    try:
        return bool(xla_bridge and xla_bridge.backends_are_initialized())
    except Exception:  # private API: a jax without it gets no warning, nothing worse
        return False


def apply(environ=None) -> str:
    """Turns XLA:CPU's ynn fusion off in `environ` (default `os.environ`); returns what it did.

    For `os.environ` the result is also kept in `status` (see `describe()`).
    """
    global status
    own = environ is None or environ is os.environ
    environ = os.environ if environ is None else environ
    xla_flags = environ.get("XLA_FLAGS", "")
    if environ.get(OPT_OUT_ENV, "").strip().lower() not in ("", "0", "false", "no", "off"):
        result = "opted-out"
    elif mentions_flag(xla_flags):
        result = "user-set"
    else:
        version = _jaxlib_version()
        if version is None:
            result = "no jaxlib"
        elif version < FIRST_AFFECTED_JAXLIB:
            result = "jaxlib " + ".".join(map(str, version))
        else:
            environ["XLA_FLAGS"] = with_fusion_off(xla_flags)
            result = "added"
            if own and _backend_started():
                warnings.warn(
                    "grace_jax was imported after jax started its backend, so XLA:CPU's ynn fusion "
                    f"stays on in this process (jaxlib miscompiles it: jax-ml/jax#39103). Import "
                    f"grace_jax first, or set XLA_FLAGS={OFF} yourself. Child processes get it.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    if own:
        status = result
    return result


def describe() -> str:
    """One line for logs: what `apply()` did about the ynn fusion in this process."""
    if status == "added":
        return f"XLA:CPU ynn fusion off (grace_jax's default; {OPT_OUT_ENV}=1 keeps XLA's)"
    if status == "user-set":
        return f"XLA:CPU ynn fusion as the caller's XLA_FLAGS set it ({FLAG})"
    if status == "opted-out":
        return f"XLA:CPU ynn fusion at XLA's default ({OPT_OUT_ENV} is set)"
    if status.startswith("jaxlib "):
        return f"XLA:CPU ynn fusion at XLA's default ({status} predates the miscompiles)"
    return f"XLA:CPU ynn fusion at XLA's default ({status})"
