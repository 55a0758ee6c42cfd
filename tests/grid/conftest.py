"""tests/grid: the grid spec, the plan, and the Ray Tune runner (ray: Tune runs trials)."""

from markers import RAY_MODULES, mark_modules

pytest_itemcollected = mark_modules(ray=RAY_MODULES)
