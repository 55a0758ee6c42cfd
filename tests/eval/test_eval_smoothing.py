"""Randomized smoothing as an evaluation threat ("smoothing-L2"): opt-in, settings and CLI argument errors.
The end-to-end tests (evaluate() and `rft-fast eval` on a trained model) are in test_eval.py, beside its model."""

from __future__ import annotations

import pytest

from rft_fast import cli
from rft_fast.eval import ALL_THREATS, THREATS, EvalSettings


def test_smoothing_is_opt_in():
    assert "smoothing-L2" not in THREATS and "smoothing-L2" in ALL_THREATS
    assert "smoothing-L2" not in EvalSettings().threats
    assert EvalSettings(threats=("smoothing-L2",)).smoothing_sigmas == (0.25,)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(smoothing_sigmas=()), "smoothing_sigmas must be a non-empty"),
        (dict(smoothing_sigmas=(0.25, -0.1)), "smoothing_sigmas must .* > 0"),
        (dict(smoothing_sigmas=(0.25, 0.25)), "smoothing_sigmas must not repeat"),
        (dict(smoothing_sigmas="0.25"), "smoothing_sigmas"),
        (dict(smoothing_radii=(0.0, -1.0)), "smoothing_radii must .* >= 0"),
        (dict(smoothing_radii=(float("inf"),)), "smoothing_radii must .* finite"),
        (dict(smoothing_n0=0), "smoothing_n0 must be an int >= 1"),
        (dict(smoothing_n=10.5), "smoothing_n must be an int >= 1"),
        (dict(smoothing_batch_size=0), "smoothing_batch_size must"),
        (dict(smoothing_alpha=1.0), r"smoothing_alpha must be a number in \(0, 1\)"),
        (dict(threats=("clean", "smoothing-Linf")), "threats must"),
    ],
)
def test_settings_reject_bad_smoothing_values(kw, message):
    with pytest.raises(ValueError, match=message):
        EvalSettings(**kw)


def test_settings_accept_a_single_number_and_normalise_to_floats():
    s = EvalSettings(smoothing_sigmas=1, smoothing_radii=[0, 1])
    assert s.smoothing_sigmas == (1.0,) and s.smoothing_radii == (0.0, 1.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sigma", "abc"], "expected a number"),
        (["--radii", ","], "comma-separated numbers"),
        (["--sigma", "-0.25"], "smoothing_sigmas must"),
        (["--smoothing-alpha", "2"], "smoothing_alpha must"),
        (["--threats", "clean,smoothing-L3"], "threats must"),
    ],
)
def test_eval_command_smoothing_errors_are_clear(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(
            ["eval", "/nonexistent/run", "--threats", "smoothing-L2"] + args + ["--store", str(tmp_path / "r.sqlite")]
        )
    assert message in str(exc.value) + capsys.readouterr().err
