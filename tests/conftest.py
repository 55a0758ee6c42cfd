"""Test setup: Triton kernels run on CPU tensors through the interpreter; under pytest-xdist each worker takes
its share of the cores for torch's threads (N workers of all-core thread pools would oversubscribe them)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# No test reaches the Hugging Face hub: one that needs hub weights or images writes a fake cache (HF_HOME).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
