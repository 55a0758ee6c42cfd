"""EpsSchedule: the curriculum radius at given steps, the step-size scale, and argument validation."""

from __future__ import annotations

import math

import pytest

from rft_fast.train.schedule import EpsSchedule

EPS = 8 / 255

# (kind, eps_start, warmup, total_steps, {step: expected eps})
CASES = (
    ("constant", 0.0, 0.0, 10, {0: EPS, 5: EPS, 9: EPS}),
    ("constant", 0.0, 0.5, 10, {0: EPS, 9: EPS}),  # eps_start and warmup unused
    ("linear", 0.0, 0.5, 10, {0: 0.0, 1: EPS / 5, 4: 4 * EPS / 5, 5: EPS, 9: EPS}),
    ("linear", 2 / 255, 0.25, 8, {0: 2 / 255, 1: 5 / 255, 2: EPS, 7: EPS}),
    ("linear", 0.0, 0.3, 10, {0: 0.0, 2: EPS * 2 / 3, 3: EPS}),  # W = 3 steps
    ("cosine", 0.0, 0.5, 10, {0: 0.0, 1: EPS * (1 - math.cos(math.pi / 5)) / 2, 5: EPS, 9: EPS}),
    ("cosine", 2 / 255, 1.0, 4, {0: 2 / 255, 2: 5 / 255, 3: 2 / 255 + 6 / 255 * (1 - math.cos(3 * math.pi / 4)) / 2}),
    ("linear", 1 / 255, 0.0, 5, {0: EPS, 4: EPS}),  # no warm-up: eps from the start
)


@pytest.mark.parametrize("kind, start, warmup, total, expected", CASES)
def test_values_at_steps(kind, start, warmup, total, expected):
    schedule = EpsSchedule(kind, eps=EPS, eps_start=start, warmup=warmup)
    for step, value in expected.items():
        assert schedule(step, total) == pytest.approx(value, abs=1e-12), step
        assert schedule.alpha_scale(step, total) == pytest.approx(value / EPS, abs=1e-12)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ramp_is_monotone_and_ends_exactly_at_eps(kind):
    schedule = EpsSchedule(kind, eps=EPS, eps_start=1 / 255, warmup=0.37)
    values = [schedule(s, 100) for s in range(100)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[0] == 1 / 255 and values[37] == EPS and values[-1] == EPS


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="step"), "kind must be one of"),
        (dict(eps=0.0), "eps must be > 0"),
        (dict(eps=float("nan")), "eps must be a finite number"),
        (dict(eps_start=-0.1), "eps_start must lie in"),
        (dict(eps_start=1.0), "eps_start must lie in"),
        (dict(warmup=1.5), "warmup must be a fraction"),
        (dict(warmup=True), "warmup must be a finite number"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpsSchedule(**{"kind": "linear", "eps": EPS, **kwargs})


@pytest.mark.parametrize(
    "step, total, message",
    [
        (-1, 10, "step must be an int >= 0"),
        (10, 10, "step must be < total_steps=10"),
        (0, 0, "total_steps must be an int >= 1"),
        (1.0, 10, "step must be an int"),
    ],
)
def test_invalid_steps_are_named(step, total, message):
    with pytest.raises(ValueError, match=message):
        EpsSchedule("linear", eps=EPS, warmup=0.5)(step, total)
