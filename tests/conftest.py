"""Test setup: Triton kernels run on CPU tensors through the interpreter; under pytest-xdist each worker takes
its share of the cores for torch's threads (N workers of all-core thread pools would oversubscribe them)."""

import os
import shutil
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest

_SCRATCH: list[str] = []


def pytest_configure(config) -> None:
    """Scratch folders of the run's own, removed at the end, so repeated runs cannot fill the disk: Ray writes each
    session's logs and spill under RAY_TMPDIR (default /tmp/ray) and never removes them; the decoded-image cache
    would otherwise grow in ~/.cache."""
    if "RAY_TMPDIR" not in os.environ:
        _SCRATCH.append(tempfile.mkdtemp(prefix="rft-ray-"))  # short: Ray's socket paths must fit 107 bytes
        os.environ["RAY_TMPDIR"] = _SCRATCH[-1]
    if "RFT_FAST_DECODED_CACHE" not in os.environ:  # the decoded-image cache: never the user's ~/.cache
        _SCRATCH.append(tempfile.mkdtemp(prefix="rft-decoded-"))
        os.environ["RFT_FAST_DECODED_CACHE"] = _SCRATCH[-1]


def pytest_unconfigure(config) -> None:
    for path in _SCRATCH:
        shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: plain pytest runs without xdist
def pytest_xdist_make_scheduler(config, log):
    """Tests spread one by one over the workers, except the Ray tests: one scope, so one worker runs them all
    (xdist's loadgroup did not group by xdist_group marks here: pytest 9.2, xdist 3.8)."""
    from markers import xdist_scope
    from xdist.scheduler import LoadScopeScheduling

    class RayTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return RayTogether(config, log)


if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# amp "auto" means float32 in every test, whether or not the machine has native bf16 (machines of this kind differ:
# AVX2-only and AMX CPUs), so thresholds measured in float32 hold on each; tests/train/test_precision.py tests the
# detection with this variable removed.
os.environ.setdefault("RFT_FAST_AUTO_AMP", "none")

# No test reaches the Hugging Face hub: one that needs hub weights or images writes a fake cache (HF_HOME).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
