"""tests/ops: every op on every backend against rft_fast.reference (Triton under TRITON_INTERPRET=1), bad numbers,
argument errors, and the CUDA checks (gpu: they skip without a device)."""

from markers import mark_modules

pytest_itemcollected = mark_modules(gpu={"test_ops_cuda"})
