"""Parameter groups, frozen groups and the step schedule, checked against torch.optim.SGD."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from grace_jax import optim

GROUPS = [
    optim.Group("frozen", r"^text/", 0.0),
    optim.Group("visual", r"^visual/", 0.1),
    optim.Group("new", r".*", 1.0),
]


def _params():
    rng = np.random.RandomState(0)
    return {
        "text": {"w": jnp.asarray(rng.randn(3, 2), jnp.float32)},
        "visual": {"w": jnp.asarray(rng.randn(4), jnp.float32)},
        "head": {"w": jnp.asarray(rng.randn(2, 2), jnp.float32)},
    }


def test_groups_match_torch_sgd():
    params = _params()
    tx = optim.make_optimizer(params, groups=GROUPS, momentum=0.9, weight_decay=1e-2, decay_steps=[2], decay_factor=0.1)
    state = tx.init(params)
    torch_params = {k: torch.tensor(np.asarray(v["w"]), requires_grad=True) for k, v in params.items()}
    torch_opt = torch.optim.SGD(
        [
            {"params": [torch_params["visual"]], "lr": 0.1},
            {"params": [torch_params["head"]], "lr": 1.0},
        ],
        momentum=0.9,
        weight_decay=1e-2,
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(torch_opt, milestones=[2], gamma=0.1)
    rng = np.random.RandomState(1)
    for _ in range(4):
        grads = {k: {"w": jnp.asarray(rng.randn(*v["w"].shape), jnp.float32)} for k, v in params.items()}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        torch_opt.zero_grad()
        for k in ("visual", "head"):
            torch_params[k].grad = torch.tensor(np.asarray(grads[k]["w"]))
        torch_opt.step()
        sched.step()
    for k in ("visual", "head"):
        np.testing.assert_allclose(params[k]["w"], torch_params[k].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(params["text"]["w"], _params()["text"]["w"])  # frozen


def test_unmatched_parameter_is_named():
    with pytest.raises(ValueError, match="head/w"):
        optim.group_labels(_params(), GROUPS[:2])


def test_warmup_then_decay():
    schedule = optim.lr_schedule(1.0, decay_steps=[10], decay_factor=0.1, warmup_steps=4)
    assert float(schedule(0)) == 0.0 and float(schedule(2)) == pytest.approx(0.5)
    assert float(schedule(5)) == pytest.approx(1.0) and float(schedule(11)) == pytest.approx(0.1)


def test_adamw_and_unknown_optimizer():
    params = _params()
    tx = optim.make_optimizer(
        params,
        groups=GROUPS,
        momentum=0.9,
        weight_decay=0.0,
        decay_steps=[],
        decay_factor=0.1,
        name="adamw",
    )
    grads = {k: {"w": jnp.ones_like(v["w"])} for k, v in params.items()}
    updates, _ = tx.update(grads, tx.init(params), params)
    # Adam's first step moves every trained weight by -lr exactly.
    np.testing.assert_allclose(updates["head"]["w"], -1.0, rtol=1e-5)
    np.testing.assert_allclose(updates["visual"]["w"], -0.1, rtol=1e-5)
    np.testing.assert_array_equal(updates["text"]["w"], 0.0)
    with pytest.raises(ValueError, match="adamw"):
        optim.make_optimizer(
            params,
            groups=GROUPS,
            momentum=0.9,
            weight_decay=0.0,
            decay_steps=[],
            decay_factor=0.1,
            name="lamb",
        )
