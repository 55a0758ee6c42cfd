"""tests/eval: AutoAttack, corruptions, smoothing, the threat registry through evaluate()."""

from markers import mark_modules

pytest_itemcollected = mark_modules(
    slow={"test_eval", "test_eval_smoothing", "test_corruptions", "test_eval_nonfinite"}
)
