"""Property-based tests (hypothesis) over the public losses and samplers.

For every entry of ``CASES``: inputs drawn at random within the documented domain give finite
outputs of the documented shape; inputs broken in one documented way (wrong rank, integer dtype,
mismatched batch, time outside [0, 1], unknown solver or option) raise the documented exception
with a message naming the argument. To cover a new loss or sampler, append a ``Case``.

Shapes are kept small and drawn from a few values so that JAX's compilation cache is reused.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import flowjax.losses as losses
import flowjax.samplers as samplers


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass(frozen=True)
class Inputs:
    n: int
    d: int
    dtype: Any
    x: np.ndarray  # (n, d) data / state
    seed: int
    options: dict  # per-case options (solver, steps, t0, t1, ...)

    @property
    def key(self):
        return jax.random.key(self.seed)

    def with_x(self, x) -> "Inputs":
        return dataclasses.replace(self, x=x)

    def with_options(self, **kw) -> "Inputs":
        return dataclasses.replace(self, options={**self.options, **kw})


_W = {d: jnp.asarray(np.linspace(-1.0, 1.0, d)) for d in range(1, 5)}


def velocity(x, t):
    """A smooth, bounded-growth field ``v(x, t) = -x / 2 + t w``: finite for every finite input."""
    w = _W[x.shape[-1]].astype(x.dtype)
    return -0.5 * x + t[:, None] * w[None, :]


def labeled_velocity(x, t, c):
    return velocity(x, t) + 0.1 * c.astype(x.dtype)[:, None]


@st.composite
def inputs(draw, options=st.just({})):
    n = draw(st.sampled_from([1, 5]))
    d = draw(st.sampled_from([1, 3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    shift = draw(st.floats(-5.0, 5.0))
    x = (np.random.default_rng(seed).normal(size=(n, d)) * scale + shift).astype(dtype)
    return Inputs(n=n, d=d, dtype=dtype, x=x, seed=seed, options=draw(options))


# ---------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass(frozen=True)
class Invalid:
    label: str
    mutate: Callable[[Inputs], Inputs]
    error: type
    match: str  # regex the message must match (names the argument)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Inputs], Any]
    check: Callable[[Inputs, Any], None]
    options: Any = st.just({})
    invalid: tuple[Invalid, ...] = ()


def _finite(*arrays):
    for a in arrays:
        assert bool(jnp.all(jnp.isfinite(a))), f"non-finite output: {a}"


def _check_loss(inp, out):
    loss, aux = out
    assert jnp.shape(loss) == ()
    _finite(loss, *aux.values())
    assert float(loss) >= 0.0
    assert all(jnp.shape(v) == () for v in aux.values())


def _check_like_x(inp, out):
    assert out.shape == inp.x.shape
    _finite(out)


def _check_per_sample(inp, out):
    assert out.shape == (inp.n,)
    _finite(out)


_fixed_solver = st.sampled_from(["euler", "midpoint", "heun", "rk4"])
_times = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).filter(lambda ab: abs(ab[0] - ab[1]) > 1e-3)

CASES: list[Case] = [
    Case(
        name="losses.cfm",
        call=lambda i: losses.cfm(velocity, i.key, i.x, prediction=i.options["prediction"]),
        check=_check_loss,
        options=st.fixed_dictionaries({"prediction": st.sampled_from(["velocity", "data", "noise"])}),
        invalid=(
            Invalid("integer x1", lambda i: i.with_x(np.round(i.x).astype(np.int32)), TypeError, r"`x1` must have a floating dtype"),
            Invalid("scalar x1", lambda i: i.with_x(i.x[0, 0]), ValueError, r"`x1` must have rank >= 1"),
            Invalid("unknown prediction", lambda i: i.with_options(prediction="score"), ValueError, r"`prediction` must be one of"),
        ),
    ),
    Case(
        name="losses.cfm(x0=..., c=...)",
        call=lambda i: losses.cfm(
            labeled_velocity, i.key, i.x, x0=i.options.get("x0", np.zeros_like(i.x)),
            c=i.options.get("c", np.arange(i.n) % 2),
        ),
        check=_check_loss,
        invalid=(
            Invalid("x0 of another batch size", lambda i: i.with_options(x0=np.zeros((i.n + 1, i.d), i.dtype)), ValueError, r"`x0` and `x1` must have the same shape"),
            Invalid("integer x0", lambda i: i.with_options(x0=np.zeros(i.x.shape, np.int64)), TypeError, r"`x0` must have a floating dtype"),
            Invalid("labels of another batch size", lambda i: i.with_options(c=np.zeros((i.n + 2,), np.int32)), ValueError, r"`c` must have batch size"),
        ),
    ),
    Case(
        name="samplers.ode",
        call=lambda i: samplers.ode(velocity, i.x, solver=i.options["solver"], steps=i.options["steps"], t0=i.options["t"][0], t1=i.options["t"][1]),
        check=_check_like_x,
        options=st.fixed_dictionaries({"solver": _fixed_solver, "steps": st.integers(1, 3), "t": _times}),
        invalid=(
            Invalid("unknown solver", lambda i: i.with_options(solver="rk5"), ValueError, r"unknown solver 'rk5'"),
            Invalid("t1 > 1", lambda i: i.with_options(t=(0.0, 1.5)), ValueError, r"`t1` must lie in \[0.0, 1.0\]"),
            Invalid("t0 < 0", lambda i: i.with_options(t=(-0.25, 1.0)), ValueError, r"`t0` must lie in \[0.0, 1.0\]"),
            Invalid("steps = 0", lambda i: i.with_options(steps=0), ValueError, r"`steps` must be a positive integer"),
            Invalid("integer x0", lambda i: i.with_x(np.round(i.x).astype(np.int32)), TypeError, r"`x0` must have a floating dtype"),
            Invalid("scalar x0", lambda i: i.with_x(i.x[0, 0]), ValueError, r"`x0` must have rank >= 1"),
        ),
    ),
    Case(
        name="samplers.sde",
        call=lambda i: samplers.sde(velocity, i.key, i.x, steps=i.options["steps"], t0=0.0, t1=i.options["t1"]),
        check=_check_like_x,
        options=st.fixed_dictionaries({"steps": st.integers(1, 3), "t1": st.floats(0.05, 1.0)}),
        invalid=(
            Invalid("t1 > 1", lambda i: i.with_options(t1=2.0), ValueError, r"`t1` must lie in \[0.0, 1.0\]"),
            Invalid("steps = 0", lambda i: i.with_options(steps=0), ValueError, r"`steps` must be a positive integer"),
            Invalid("integer x0", lambda i: i.with_x(np.round(i.x).astype(np.int32)), TypeError, r"`x0` must have a floating dtype"),
        ),
    ),
    Case(
        name="samplers.log_likelihood",
        call=lambda i: samplers.log_likelihood(
            velocity, i.x, solver=i.options["solver"], steps=i.options["steps"],
            divergence=i.options.get("divergence", "exact"),
        ),
        check=_check_per_sample,
        options=st.fixed_dictionaries({"solver": st.sampled_from(["euler", "heun"]), "steps": st.integers(1, 3)}),
        invalid=(
            Invalid("unknown divergence", lambda i: i.with_options(divergence="trace"), ValueError, r"`divergence` must be one of"),
            Invalid("integer x1", lambda i: i.with_x(np.round(i.x).astype(np.int32)), TypeError, r"`x1` must have a floating dtype"),
        ),
    ),
]

# Each new shape/dtype compiles: few examples, no shrinking (the first failing example is reported).
SETTINGS = settings(
    max_examples=4, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_valid_inputs_give_finite_outputs_of_the_right_shape(case):
    @SETTINGS
    @given(inputs(case.options))
    def run(inp):
        case.check(inp, case.call(inp))

    run()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outputs_keep_the_input_dtype(case):
    @settings(max_examples=1, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
    @given(inputs(case.options).filter(lambda i: i.dtype == np.float32))
    def run(inp):
        out = case.call(inp)
        arrays = [out[0], *out[1].values()] if isinstance(out, tuple) else [out]
        assert all(a.dtype == np.float32 for a in arrays), [a.dtype for a in arrays]

    run()


INVALID = [(c, bad) for c in CASES for bad in c.invalid]


@pytest.mark.parametrize("case,bad", INVALID, ids=[f"{c.name}: {b.label}" for c, b in INVALID])
def test_invalid_inputs_raise_naming_the_argument(case, bad):
    @settings(max_examples=3, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
    @given(inputs(case.options))
    def run(inp):
        with pytest.raises(bad.error, match=bad.match):
            case.call(bad.mutate(inp))

    run()


# ---------------------------------------------------------------------------------------------
# Configuration boundaries (the experiment runner): unknown preset, misspelled --set keys.


def test_runner_rejects_unknown_presets_and_misspelled_keys():
    run = pytest.importorskip("experiments.run")
    slug = next(iter(run.discover()))
    with pytest.raises(ValueError, match=r"unknown preset 'cpux'"):
        run.load_config(slug, "cpux")
    cfg = run.load_config(slug, "smoke")
    key = sorted(k for k in cfg.keys() if not hasattr(cfg[k], "keys"))[0]
    with pytest.raises(ValueError, match=rf"unknown key '{key}x'"):
        run.load_config(slug, "smoke", [f"{key}x=1"])
    with pytest.raises(ValueError, match=r"unknown experiment"):
        run.resolve("no-such-experiment")
