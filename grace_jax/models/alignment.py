"""Token-level entropic optimal transport between text tokens and visual tokens.

GRACE aligns CATE-refined text tokens with spatio-temporal visual tokens by entropy-regularised OT
(DESIGN.md section 2.5). The solver is ott-jax's log-domain Sinkhorn; this module adds what the model
needs around it: arbitrary leading batch dimensions (clips x classes), an explicit epsilon (ott treats
``epsilon=None`` as relative to the cost, which would silently change the problem with the cost scale),
implicit or unrolled differentiation, and the convergence information that goes into ``aux``.

Zero entries of a marginal are allowed and mean "this token does not exist" (padding and special text
tokens, tokens dropped by top-k): the corresponding rows/columns of the returned plan are exactly zero.
ott's own handling of exact zeros (``-inf`` potentials) is fine going forward but makes the implicit
linear system singular (NaN gradients everywhere) and gives infinite gradients w.r.t. the marginal in
unrolled mode, so inside the solver a zero entry is replaced by a constant ``ZERO_MASS`` (1e-8, below
float32 resolution of any real token's mass) and the rows/columns are masked out of the plan afterwards.
The effect on the remaining plan is O(1e-8) relative: far below the 1e-5 POT parity the tests demand.

Implicit differentiation solves a linear system with lineax (ott's default). At very small epsilon
relative to the cost range the system can be numerically singular in float32; lineax would then raise
inside the backward pass and kill a training run, so the solve is done with ``throw=False`` and a
non-finite solution is replaced by zeros (that batch item's OT term contributes no gradient through
the potentials). ``implicit=False`` (unrolled) is the robust alternative for such settings.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import lineax as lx
from ott import utils as ott_utils
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import implicit_differentiation as implicit_lib
from ott.solvers.linear import lineax_implicit
from ott.solvers.linear import sinkhorn

__all__ = ["OTResult", "solve_ot", "sinkhorn_plan", "ot_scores", "ZERO_MASS"]

ZERO_MASS = 1e-8


def _solve_lineax_nothrow(lin, b, lin_t=None, symmetric=False, **kwargs):
    """ott's lineax solve (same operators and tolerances) that never raises; non-finite -> 0."""
    structure = jax.eval_shape(lambda: b)
    kwargs.setdefault("rtol", 1e-6)
    kwargs.setdefault("atol", 1e-6)
    if symmetric:
        operator = lx.FunctionLinearOperator(lin, structure, tags=lx.positive_semidefinite_tag)
        solver = lx.CG(**kwargs)
    else:
        operator = lineax_implicit.CustomTransposeLinearOperator(lin, lin_t, structure, structure)
        solver = lx.Normal(lx.CG(**kwargs))
    x = lx.linear_solve(operator, b, solver, throw=False).value
    return jnp.where(jnp.all(jnp.isfinite(x)), x, jnp.zeros_like(x))


@ott_utils.register_pytree_node
class _NoThrowImplicitDiff(implicit_lib.ImplicitDiff):
    """ott's ImplicitDiff with the lineax solve swapped for :func:`_solve_lineax_nothrow`.

    ott 0.6.0 cannot take a custom ``solver`` (``ImplicitDiff.solve`` only binds its local ``solver``
    when the field is None), so the module-level ``solve_lineax`` it looks up is swapped while the
    backward pass is traced. Tracing is single-threaded per jit, and the swap is undone at once.
    """

    def solve(self, gr, ot_prob, f, g, lse_mode):  # noqa: D102
        original = lineax_implicit.solve_lineax
        lineax_implicit.solve_lineax = _solve_lineax_nothrow
        try:
            return super().solve(gr, ot_prob, f, g, lse_mode)
        finally:
            lineax_implicit.solve_lineax = original


_IMPLICIT = _NoThrowImplicitDiff()


class OTResult(NamedTuple):
    """Plan and convergence information, all with the leading batch dims of the problem.

    plan: [..., N, M] transport plan (rows: ``a`` side, columns: ``b`` side).
    converged: [...] bool, marginal error below ``threshold`` before ``max_iterations``.
    n_iters: [...] int32, Sinkhorn iterations run (a multiple of ``inner_iterations``).
    error: [...] last recorded L1 marginal error.
    """

    plan: jax.Array
    converged: jax.Array
    n_iters: jax.Array
    error: jax.Array


def _solve_single(
    cost: jax.Array,
    a: jax.Array,
    b: jax.Array,
    *,
    epsilon: float,
    max_iterations: int,
    threshold: float,
    inner_iterations: int,
    implicit: bool,
) -> OTResult:
    a_on, b_on = a > 0, b > 0
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon)
    # where() (not a + mask) so that no gradient reaches the stand-in mass of absent tokens.
    prob = linear_problem.LinearProblem(
        geom, a=jnp.where(a_on, a, ZERO_MASS), b=jnp.where(b_on, b, ZERO_MASS)
    )
    solver = sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=threshold,
        max_iterations=max_iterations,
        inner_iterations=inner_iterations,
        # None selects ott's unrolled (backprop through the stored iterations) differentiation.
        implicit_diff=_IMPLICIT if implicit else None,
    )
    out = solver(prob)
    errors = out.errors
    # errors holds -1 after termination; the last recorded value is the final marginal error.
    recorded = errors != -1
    last = jnp.maximum(jnp.sum(recorded) - 1, 0)
    return OTResult(
        plan=jnp.where(a_on[:, None] & b_on[None, :], out.matrix, 0.0),
        converged=jnp.asarray(out.converged),
        n_iters=jnp.asarray(out.n_iters, jnp.int32),
        error=errors[last],
    )


def solve_ot(
    cost: jax.Array,
    a: jax.Array,
    b: jax.Array,
    *,
    epsilon: float,
    max_iterations: int = 100,
    threshold: float = 1e-3,
    inner_iterations: int = 10,
    implicit: bool = True,
) -> OTResult:
    """Entropic OT ``min <P, C> - epsilon H(P)`` s.t. ``P 1 = a, P^T 1 = b``, log-domain Sinkhorn.

    Args:
        cost: [..., N, M] cost matrices.
        a: [..., N] source marginals (non-negative, summing to 1; zeros allowed).
        b: [..., M] target marginals (non-negative, summing to 1; zeros allowed).
            Leading dims of ``cost``, ``a`` and ``b`` broadcast against each other.
        epsilon: absolute entropic regularisation (same units as ``cost``).
        max_iterations: Sinkhorn iteration budget.
        threshold: stop when the L1 marginal error falls below this.
        inner_iterations: iterations between two error checks (ott's ``inner_iterations``).
        implicit: implicit differentiation of the fixed point (default), else unrolled.

    Returns:
        An :class:`OTResult` whose fields carry the broadcast leading dims.
    """
    if cost.ndim < 2:
        raise ValueError(f"cost must be [..., N, M], got shape {cost.shape}")
    n, m = cost.shape[-2:]
    if a.shape[-1] != n or b.shape[-1] != m:
        raise ValueError(f"marginal sizes {a.shape}, {b.shape} do not match cost {cost.shape}")
    if epsilon is None or not epsilon > 0:
        raise ValueError(f"epsilon must be a positive float, got {epsilon!r}")
    batch = jnp.broadcast_shapes(cost.shape[:-2], a.shape[:-1], b.shape[:-1])
    cost = jnp.broadcast_to(cost, batch + (n, m))
    a = jnp.broadcast_to(a, batch + (n,)).astype(cost.dtype)
    b = jnp.broadcast_to(b, batch + (m,)).astype(cost.dtype)
    size = math.prod(batch)

    def one(c, x, y):
        return _solve_single(
            c,
            x,
            y,
            epsilon=float(epsilon),
            max_iterations=int(max_iterations),
            threshold=float(threshold),
            inner_iterations=int(inner_iterations),
            implicit=implicit,
        )

    # One vmap over the flattened batch: ott's while_loop then runs until the slowest problem converges.
    out = jax.vmap(one)(cost.reshape((size, n, m)), a.reshape((size, n)), b.reshape((size, m)))
    return OTResult(
        plan=out.plan.reshape(batch + (n, m)),
        converged=out.converged.reshape(batch),
        n_iters=out.n_iters.reshape(batch),
        error=out.error.reshape(batch),
    )


def sinkhorn_plan(
    cost: jax.Array,
    a: jax.Array,
    b: jax.Array,
    *,
    epsilon: float,
    max_iterations: int = 100,
    threshold: float = 1e-3,
    inner_iterations: int = 10,
    implicit: bool = True,
) -> jax.Array:
    """Transport plan [..., N, M] of :func:`solve_ot` (same arguments)."""
    return solve_ot(
        cost,
        a,
        b,
        epsilon=epsilon,
        max_iterations=max_iterations,
        threshold=threshold,
        inner_iterations=inner_iterations,
        implicit=implicit,
    ).plan


def ot_scores(
    text: jax.Array,
    text_mass: jax.Array,
    visual: jax.Array,
    visual_mass: jax.Array,
    *,
    epsilon: float,
    max_iterations: int = 100,
    threshold: float = 1e-3,
    inner_iterations: int = 10,
    implicit: bool = True,
) -> tuple[jax.Array, OTResult]:
    """OT similarity ``s = sum(P * cos)`` between token sets, PLOT-style.

    Args:
        text: [..., N, D] text token features (any scale; cosine is taken here).
        text_mass: [..., N] text marginal.
        visual: [..., M, D] visual token features.
        visual_mass: [..., M] visual marginal.
        Leading dims broadcast (e.g. text [1, C, N, D] against visual [B, 1, M, D]).

    Returns:
        (scores [...], OTResult with plan [..., N, M]).
    """
    text = text / jnp.linalg.norm(text, axis=-1, keepdims=True).clip(1e-6)
    visual = visual / jnp.linalg.norm(visual, axis=-1, keepdims=True).clip(1e-6)
    cos = jnp.einsum("...nd,...md->...nm", text, visual)  # [..., N, M]
    result = solve_ot(
        1.0 - cos,
        text_mass,
        visual_mass,
        epsilon=epsilon,
        max_iterations=max_iterations,
        threshold=threshold,
        inner_iterations=inner_iterations,
        implicit=implicit,
    )
    scores = jnp.sum(result.plan * cos, axis=(-2, -1))  # [...]
    return scores, result
