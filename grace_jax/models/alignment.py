"""Token-level entropic optimal transport between text tokens and visual tokens.

GRACE aligns CATE-refined text tokens with spatio-temporal visual tokens by entropy-regularised OT
(docs/model.md). The solver is ott-jax's log-domain Sinkhorn; this module adds what the model
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
inside the backward pass and kill a training run, so the solve is done with ``throw=False``; a
problem whose backward pass comes out non-finite gets a zero gradient through its potentials, and is
counted: pass ``probe`` (a float32 scalar zero) and differentiate with respect to it too, and its
gradient is the number of problems whose gradient was zeroed (the trainer logs it as
``ot_fallbacks``). ``implicit=False`` (unrolled) is the robust alternative for such settings.

The visual side need not be a hard marginal. ``tau_b`` < 1 solves the semi-relaxed problem
``min <P, C> - eps H(P) + rho KL(P^T 1 || b)`` with ``P 1 = a`` exact and ``rho = eps tau_b / (1 -
tau_b)`` (ott's unbalanced Sinkhorn): at the optimum the mass a visual token receives is ``b_k^tau_b
* S_k^(1 - tau_b)`` with ``S_k = sum_n exp((f_n - C_nk) / eps)``, the prior ``b`` reweighted by how
well the token matches the text. With ``tau_b = 1`` (balanced) it is ``b`` itself whatever the text,
so a balanced plan's visual mass carries no class information.

``relative_epsilon=True`` multiplies ``epsilon`` by each problem's cost spread (the standard
deviation of the cost over present tokens, under stop_gradient), so that the plan's sharpness does
not depend on the scale of the features' cosines.
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
from ott.solvers.linear import lineax_implicit, sinkhorn

__all__ = ["OTResult", "solve_ot", "sinkhorn_plan", "ot_scores", "plan_statistics", "ZERO_MASS"]

ZERO_MASS = 1e-8
# Added to the cost of absent visual tokens in a semi-relaxed problem: there the column mass is not
# pinned to b, and a stand-in mass of 1e-8 would still receive b^tau S^(1-tau) ~ 1e-4 of the mass.
_ABSENT_COST = 1e3


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
    # NaN, not zeros: _guard_gradient below must see the failure to count it (it zeroes it there).
    return jnp.where(jnp.all(jnp.isfinite(x)), x, jnp.full_like(x, jnp.nan))


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


@jax.custom_vjp
def _guard_gradient(cost, a, b, probe):
    """Identity going forward. Going back, a non-finite cotangent of (cost, a, b) is replaced by
    zeros, and 1 is sent to ``probe``: summed over problems, the count of zeroed gradients."""
    del probe
    return cost, a, b


def _guard_fwd(cost, a, b, probe):
    del probe
    return (cost, a, b), None


def _guard_bwd(_, cotangents):
    ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in cotangents]))
    safe = tuple(jnp.where(ok, g, jnp.zeros_like(g)) for g in cotangents)
    return (*safe, 1.0 - ok.astype(jnp.float32))


_guard_gradient.defvjp(_guard_fwd, _guard_bwd)


class OTResult(NamedTuple):
    """Plan and convergence information, all with the leading batch dims of the problem.

    plan: [..., N, M] transport plan (rows: ``a`` side, columns: ``b`` side).
    converged: [...] bool, marginal error below ``threshold`` before ``max_iterations``.
    n_iters: [...] int32, Sinkhorn iterations run (a multiple of ``inner_iterations``).
    error: [...] last recorded L1 marginal error (of the ``a`` side when the problem is relaxed).
    epsilon: [...] the entropic regularisation used (``epsilon`` times the cost spread when relative).
    cost_std: [...] standard deviation of the cost over present tokens (the scale epsilon acts on).
    """

    plan: jax.Array
    converged: jax.Array
    n_iters: jax.Array
    error: jax.Array
    epsilon: jax.Array
    cost_std: jax.Array


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
    relative_epsilon: bool,
    tau_b: float,
    probe: jax.Array,
) -> OTResult:
    cost, a, b = _guard_gradient(cost, a, b, probe)
    a_on, b_on = a > 0, b > 0
    on = a_on[:, None] & b_on[None, :]
    count = jnp.maximum(on.sum(), 1)
    mean = jnp.sum(jnp.where(on, cost, 0.0)) / count
    cost_std = jnp.sqrt(jnp.sum(jnp.where(on, (cost - mean) ** 2, 0.0)) / count)
    cost_std = jax.lax.stop_gradient(cost_std)
    # A floor keeps a degenerate problem (every cost equal) solvable; its plan is then uniform anyway.
    eps = epsilon * jnp.maximum(cost_std, 1e-3) if relative_epsilon else jnp.asarray(epsilon, cost.dtype)
    if tau_b < 1.0:
        cost = jnp.where(b_on[None, :], cost, cost + _ABSENT_COST)
    geom = geometry.Geometry(cost_matrix=cost, epsilon=eps)
    # where() (not a + mask) so that no gradient reaches the stand-in mass of absent tokens.
    prob = linear_problem.LinearProblem(
        geom, a=jnp.where(a_on, a, ZERO_MASS), b=jnp.where(b_on, b, ZERO_MASS), tau_a=1.0, tau_b=tau_b
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
        epsilon=jnp.asarray(eps, jnp.float32),
        cost_std=cost_std.astype(jnp.float32),
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
    relative_epsilon: bool = False,
    tau_b: float = 1.0,
    probe: jax.Array | None = None,
) -> OTResult:
    """Entropic OT ``min <P, C> - epsilon H(P)`` s.t. ``P 1 = a, P^T 1 = b``, log-domain Sinkhorn;
    with ``tau_b < 1`` the column constraint is relaxed (see the module docstring).

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
        relative_epsilon: ``epsilon`` is in units of each problem's cost standard deviation.
        tau_b: 1 for a hard ``b`` marginal; in (0, 1) for the semi-relaxed problem.
        probe: optional float32 scalar; its gradient counts problems whose gradient was zeroed.

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
    if not 0.0 < tau_b <= 1.0:
        raise ValueError(f"tau_b must be in (0, 1], got {tau_b!r}")
    if probe is None:
        probe = jnp.zeros((), jnp.float32)
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
            relative_epsilon=bool(relative_epsilon),
            tau_b=float(tau_b),
            probe=probe,
        )

    # One vmap over the flattened batch: ott's while_loop then runs until the slowest problem converges.
    out = jax.vmap(one)(cost.reshape((size, n, m)), a.reshape((size, n)), b.reshape((size, m)))
    return OTResult(
        plan=out.plan.reshape(batch + (n, m)),
        converged=out.converged.reshape(batch),
        n_iters=out.n_iters.reshape(batch),
        error=out.error.reshape(batch),
        epsilon=out.epsilon.reshape(batch),
        cost_std=out.cost_std.reshape(batch),
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
    relative_epsilon: bool = False,
    tau_b: float = 1.0,
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
        relative_epsilon=relative_epsilon,
        tau_b=tau_b,
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
    relative_epsilon: bool = False,
    tau_b: float = 1.0,
    probe: jax.Array | None = None,
) -> tuple[jax.Array, OTResult]:
    """OT similarity ``s = sum(P * cos)`` between token sets, PLOT-style (options as `solve_ot`).

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
        relative_epsilon=relative_epsilon,
        tau_b=tau_b,
        probe=probe,
    )
    scores = jnp.sum(result.plan * cos, axis=(-2, -1))  # [...]
    return scores, result


def plan_statistics(*, plan: jax.Array) -> dict[str, jax.Array]:
    """How sharp plans are, per problem.

    Args:
      plan: [..., N, M] transport plans.

    Returns:
      {"mutual_information": [...] KL(P || P1 (P^T 1)^T) in nats: 0 for the independent coupling
       (every text token spread over the visual tokens alike, so the score is a pooled cosine), up to
       log min(N, M); "visual_entropy": [...] entropy of the column mass P^T 1, in nats: log M for
       mass spread evenly, 0 for all of it on one token}.
    """
    plan = jax.lax.stop_gradient(plan).astype(jnp.float32)
    total = jnp.maximum(plan.sum((-2, -1), keepdims=True), 1e-30)
    p = plan / total
    rows = p.sum(-1, keepdims=True)  # [..., N, 1]
    cols = p.sum(-2, keepdims=True)  # [..., 1, M]
    ratio = jnp.where(p > 0, p / jnp.maximum(rows * cols, 1e-30), 1.0)
    mi = jnp.sum(jnp.where(p > 0, p * jnp.log(ratio), 0.0), axis=(-2, -1))
    q = cols[..., 0, :]
    entropy = -jnp.sum(jnp.where(q > 0, q * jnp.log(jnp.maximum(q, 1e-30)), 0.0), axis=-1)
    return {"mutual_information": mi, "visual_entropy": entropy}
