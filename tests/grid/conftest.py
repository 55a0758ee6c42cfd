"""tests/grid: the grid spec, the plan, and the Ray Tune runner (ray: Tune runs trials)."""

from markers import mark_modules

pytest_itemcollected = mark_modules(
    ray={"test_grid_run", "test_grid_failures", "test_asha_resume", "test_grid_real_inputs"}
)
