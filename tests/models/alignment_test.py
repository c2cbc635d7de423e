"""Sinkhorn alignment: parity with POT's log-domain Sinkhorn, OT properties, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import ot  # POT
import pytest

from grace_jax.models import alignment


def _problem(rng, n, m, zeros_a=0):
    cost = rng.uniform(0.0, 2.0, (n, m))  # the range of 1 - cos
    a = rng.uniform(0.1, 1.0, n)
    a[n - zeros_a :] = 0.0
    a /= a.sum()
    b = rng.uniform(0.1, 1.0, m)
    b /= b.sum()
    return cost, a, b


def _f32(*xs):
    return [jnp.asarray(x, jnp.float32) for x in xs]


# The solvers jitted, as the model runs them. Called op by op instead, every problem size compiled each
# of the ~40 operations around the Sinkhorn loop on its own: most of this file's time, for the same
# computation.
_OT_OPTIONS = ("epsilon", "max_iterations", "threshold", "inner_iterations", "implicit", "relative_epsilon", "tau_b")
_solve_ot = jax.jit(alignment.solve_ot, static_argnames=_OT_OPTIONS)
_sinkhorn_plan = jax.jit(alignment.sinkhorn_plan, static_argnames=_OT_OPTIONS)
_ot_scores = jax.jit(alignment.ot_scores, static_argnames=_OT_OPTIONS)


# Sizes span the model's range: a short cue x a few frames of patches, and epsilon down to 0.01.
@pytest.mark.parametrize(
    "n,m,eps",
    [(16, 40, 0.1), (32, 196, 0.05), (24, 300, 0.01), (8, 12, 0.01)],
)
def test_matches_pot_log_sinkhorn(n, m, eps):
    rng = np.random.default_rng(n * 1000 + m)
    cost, a, b = _problem(rng, n, m)
    # POT in float64, run to a far tighter tolerance than ours so it is the reference fixed point.
    ref = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-12)
    out = _solve_ot(*_f32(cost, a, b), epsilon=eps, max_iterations=20_000, threshold=1e-6)
    plan = np.asarray(out.plan, np.float64)
    assert np.all(np.isfinite(plan))
    # float32 cannot always get the L1 marginal error under 1e-6 at epsilon=0.01 (it stalls near
    # 1.3e-6 on the 8x12 problem), so the solver's own error is checked instead of its flag.
    assert float(out.error) <= 2e-6
    assert np.abs(plan - ref).max() <= 1e-5 * ref.max()
    assert np.abs(plan.sum(1) - a).max() <= 1e-4
    assert np.abs(plan.sum(0) - b).max() <= 1e-4


def test_matches_pot_in_float64():
    """In float64 the same solver reaches POT's fixed point to 1e-9: differences above are rounding."""
    rng = np.random.default_rng(7)
    cost, a, b = _problem(rng, 24, 300)
    ref = ot.sinkhorn(a, b, cost, 0.01, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    with jax.enable_x64(True):
        out = _solve_ot(
            jnp.asarray(cost),
            jnp.asarray(a),
            jnp.asarray(b),
            epsilon=0.01,
            max_iterations=20_000,
            threshold=1e-11,
        )
        assert out.plan.dtype == jnp.float64 and bool(out.converged)
        plan = np.asarray(out.plan)
    assert np.abs(plan - ref).max() <= 1e-9 * ref.max()


def test_zero_mass_rows_are_exactly_zero_and_rest_matches_pot():
    rng = np.random.default_rng(1)
    cost, a, b = _problem(rng, 12, 50, zeros_a=4)
    out = _solve_ot(*_f32(cost, a, b), epsilon=0.05, max_iterations=5000, threshold=1e-6)
    plan = np.asarray(out.plan, np.float64)
    assert np.all(plan[8:] == 0.0)
    # Zero-mass tokens must not perturb the others: compare to POT on the support only.
    ref = ot.sinkhorn(a[:8], b, cost[:8], 0.05, method="sinkhorn_log", numItermax=100_000, stopThr=1e-12)
    assert np.abs(plan[:8] - ref).max() <= 1e-5 * ref.max()


def test_properties_and_batching():
    rng = np.random.default_rng(2)
    probs = [_problem(rng, 10, 30, zeros_a=i) for i in range(6)]
    cost = jnp.asarray(np.stack([p[0] for p in probs]).reshape(2, 3, 10, 30), jnp.float32)
    a = jnp.asarray(np.stack([p[1] for p in probs]).reshape(2, 3, 10), jnp.float32)
    b = jnp.asarray(np.stack([p[2] for p in probs]).reshape(2, 3, 30), jnp.float32)
    kw = dict(epsilon=0.1, max_iterations=2000, threshold=1e-6)
    out = jax.jit(lambda c, x, y: alignment.solve_ot(c, x, y, **kw))(cost, a, b)
    assert out.plan.shape == (2, 3, 10, 30)
    assert out.converged.shape == out.n_iters.shape == out.error.shape == (2, 3)
    assert bool(jnp.all(out.plan >= 0.0))
    np.testing.assert_allclose(out.plan.sum(-1), a, atol=1e-5)
    np.testing.assert_allclose(out.plan.sum(-2), b, atol=1e-5)
    single_fn = jax.jit(lambda c, x, y: alignment.sinkhorn_plan(c, x, y, **kw))
    for i in range(2):
        for j in range(3):
            single = single_fn(cost[i, j], a[i, j], b[i, j])
            np.testing.assert_allclose(out.plan[i, j], single, rtol=1e-5, atol=1e-8)
    # Broadcasting: one b for every problem of a row.
    bcast = _sinkhorn_plan(cost, a, b[:, :1], **kw)
    np.testing.assert_allclose(bcast.sum(-2), jnp.broadcast_to(b[:, :1], b.shape), atol=1e-5)


def test_small_epsilon_has_no_nan_in_plan_or_gradient():
    rng = np.random.default_rng(3)
    cost, a, b = _problem(rng, 20, 64, zeros_a=5)
    cost, a, b = _f32(cost, a, b)

    def loss(c, x, y):
        plan = alignment.sinkhorn_plan(c, x, y, epsilon=0.01, max_iterations=3000, threshold=1e-5)
        return jnp.sum(plan * c)

    val, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(cost, a, b)
    assert np.isfinite(val)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))


@jax.jit
def _implicit_and_unrolled_grads(c, x, b, w):
    """d <plan, w> / d (cost, a), by implicit differentiation and by unrolling."""

    def loss(c, x, implicit):
        plan = alignment.sinkhorn_plan(c, x, b, epsilon=0.1, max_iterations=300, threshold=1e-7, implicit=implicit)
        return jnp.sum(plan * w)

    return jax.grad(loss, (0, 1))(c, x, True), jax.grad(loss, (0, 1))(c, x, False)


# Both cases run one compiled program: which tokens are absent is data (a > 0), not structure.
@pytest.mark.slow
@pytest.mark.parametrize("zeros", [0, 3])
def test_implicit_and_unrolled_gradients_agree(zeros):
    rng = np.random.default_rng(4)
    cost, a, b = _f32(*_problem(rng, 8, 12, zeros_a=zeros))
    w = jnp.asarray(rng.normal(size=(8, 12)), jnp.float32)
    (gc_imp, ga_imp), (gc_unr, ga_unr) = _implicit_and_unrolled_grads(cost, a, b, w)
    np.testing.assert_allclose(gc_imp, gc_unr, atol=1e-4 * float(jnp.abs(gc_unr).max()))
    # Marginal gradients are defined up to a constant on the simplex: compare them centred, on the
    # support (absent tokens get no gradient at all).
    on = slice(0, 8 - zeros)
    np.testing.assert_allclose(
        ga_imp[on] - ga_imp[on].mean(),
        ga_unr[on] - ga_unr[on].mean(),
        atol=2e-4 * float(jnp.abs(ga_unr[on]).max()),
    )
    assert np.all(np.asarray(ga_imp[8 - zeros :]) == 0.0)
    assert np.all(np.asarray(ga_unr[8 - zeros :]) == 0.0)


def test_ot_scores_broadcast_over_classes():
    rng = np.random.default_rng(5)
    text = jnp.asarray(rng.normal(size=(1, 3, 5, 8)), jnp.float32)
    visual = jnp.asarray(rng.normal(size=(2, 1, 7, 8)), jnp.float32)
    tmass = jnp.full((1, 3, 5), 0.2)
    vmass = jnp.full((2, 1, 7), 1 / 7)
    scores, res = _ot_scores(text, tmass, visual, vmass, epsilon=0.1, threshold=1e-5, max_iterations=1000)
    assert scores.shape == (2, 3) and res.plan.shape == (2, 3, 5, 7)
    assert bool(jnp.all(jnp.abs(scores) <= 1.0 + 1e-5))


def test_rejects_missing_epsilon():
    with pytest.raises(ValueError, match="epsilon"):
        alignment.solve_ot(jnp.zeros((2, 3)), jnp.full(2, 0.5), jnp.full(3, 1 / 3), epsilon=None)


@pytest.mark.parametrize("tau_b", [0.5, 0.1])
def test_semi_relaxed_matches_pot_unbalanced(tau_b):
    """tau_b < 1: POT's unbalanced Sinkhorn with an exact source side (reg_m = (inf, rho)), the
    entropy regulariser, and rho = eps tau_b / (1 - tau_b), ott's parametrisation."""
    rng = np.random.default_rng(11)
    cost, a, b = _problem(rng, 12, 60)
    eps = 0.1
    rho = eps * tau_b / (1 - tau_b)
    ref = ot.unbalanced.sinkhorn_unbalanced(
        a,
        b,
        cost,
        eps,
        (float("inf"), rho),
        method="sinkhorn",
        reg_type="entropy",
        numItermax=100_000,
        stopThr=1e-13,
    )
    out = _solve_ot(*_f32(cost, a, b), epsilon=eps, tau_b=tau_b, max_iterations=5000, threshold=1e-7)
    plan = np.asarray(out.plan, np.float64)
    assert np.abs(plan - ref).max() <= 1e-5 * ref.max()
    assert np.abs(plan.sum(1) - a).max() <= 1e-5  # the text side stays exact
    assert np.abs(plan.sum(0) - b).sum() > 0.1  # the visual side moved away from b


def test_semi_relaxed_column_mass_follows_the_text_balanced_does_not():
    """Two 'classes' whose text matches different visual tokens: relaxed, each sends its mass to its
    own tokens; balanced, both column masses are b whatever the text."""
    rng = np.random.default_rng(12)
    visual = rng.normal(size=(30, 16))
    text = np.stack([visual[:5] + 0.1 * rng.normal(size=(5, 16)), visual[20:25] + 0.1 * rng.normal(size=(5, 16))])
    text, visual = jnp.asarray(text, jnp.float32), jnp.asarray(visual, jnp.float32)
    a = jnp.full((2, 5), 0.2)
    b = jnp.full((30,), 1 / 30)
    for tau_b, expect_own in ((0.5, True), (1.0, False)):
        _, res = _ot_scores(
            text, a, visual[None], b[None], epsilon=0.05, tau_b=tau_b, max_iterations=2000, threshold=1e-6
        )
        cols = np.asarray(res.plan.sum(-2))  # [2, 30]
        if expect_own:
            assert cols[0, :5].sum() > 0.8 and cols[1, 20:25].sum() > 0.8
        else:
            np.testing.assert_allclose(cols, 1 / 30, atol=1e-4)


def test_relative_epsilon_scales_with_the_cost_spread():
    rng = np.random.default_rng(13)
    cost, a, b = _problem(rng, 10, 40)
    small = 1.0 + 0.1 * (cost - cost.mean())  # the same problem with a tenth of the spread
    r1 = _solve_ot(*_f32(cost, a, b), epsilon=0.5, relative_epsilon=True, threshold=1e-6, max_iterations=2000)
    r2 = _solve_ot(*_f32(small, a, b), epsilon=0.5, relative_epsilon=True, threshold=1e-6, max_iterations=2000)
    np.testing.assert_allclose(float(r1.cost_std), cost.std(), rtol=1e-4)
    np.testing.assert_allclose(float(r2.epsilon), 0.1 * float(r1.epsilon), rtol=1e-4)
    np.testing.assert_allclose(r1.plan, r2.plan, atol=1e-5)  # same sharpness at any scale


@pytest.mark.slow
def test_probe_counts_problems_whose_gradient_was_zeroed():
    """A non-finite gradient inside one problem is zeroed for that problem and counted by the probe's
    gradient; the other problems keep their gradients."""
    rng = np.random.default_rng(14)
    cost, a, b = _problem(rng, 6, 9)
    costs = jnp.asarray(np.stack([cost, cost, cost]), jnp.float32)

    @jax.jit
    def grads(costs, probe):
        def loss(c, probe):
            res = alignment.solve_ot(c, *_f32(a, b), epsilon=0.1, probe=probe)
            # A NaN reaches the plan's cotangent of problem 1 only.
            return jnp.sum(res.plan * c) + jnp.nan * jnp.sum(res.plan[1])

        return jax.grad(loss, argnums=(0, 1))(costs, probe)

    g_cost, count = grads(costs, jnp.zeros((), jnp.float32))
    assert float(count) == 1.0
    g = np.asarray(g_cost)
    assert np.all(np.isfinite(g))
    # Problem 1 keeps only the direct term of sum(plan * c), the plan itself: nothing through the solve.
    plan = np.asarray(_solve_ot(costs, *_f32(a, b), epsilon=0.1).plan)
    np.testing.assert_allclose(g[1], plan[1], rtol=1e-5, atol=1e-8)
    assert np.abs(g[0] - plan[0]).max() > 1e-3 and np.allclose(g[0], g[2])


def test_plan_statistics():
    a = np.full(4, 0.25)
    b = np.full(8, 0.125)
    independent = jnp.asarray(np.outer(a, b), jnp.float32)
    stats = alignment.plan_statistics(plan=independent)
    assert abs(float(stats["mutual_information"])) < 1e-6
    np.testing.assert_allclose(float(stats["visual_entropy"]), np.log(8), rtol=1e-6)
    # Each text token on its own pair of visual tokens: MI = log 4, column mass still uniform.
    sharp = np.zeros((4, 8))
    for i in range(4):
        sharp[i, 2 * i : 2 * i + 2] = 0.125
    stats = alignment.plan_statistics(plan=jnp.asarray(sharp, jnp.float32))
    np.testing.assert_allclose(float(stats["mutual_information"]), np.log(4), rtol=1e-5)
