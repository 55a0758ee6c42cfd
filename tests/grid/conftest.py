"""tests/grid: the grid spec, the plan, and the Ray Tune runner (ray: Tune runs trials)."""

import os

import pytest
from markers import RAY_MODULES, mark_modules

pytest_itemcollected = mark_modules(ray=RAY_MODULES)


@pytest.fixture(scope="session")
def ray_address():
    """The address of one local Ray instance for the grid tests that never kill Ray (`rft-fast grid --address`,
    run_grid(address=...)): they skip Ray's start-up and shutdown, seconds each on 2 cores. Started by the first
    test asking for it, in this process, shut down at the end of the session. The tests that kill a grid keep
    starting their own (a SIGKILL of the grid takes its local Ray down with it)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # what run_grid's own local instance does
    context = ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()
