"""tests/kernels: ahead-of-time compiles of the Triton kernels for sm_80 / sm_90 (no GPU needed; slow: ptxas)."""

from markers import mark_modules

pytest_itemcollected = mark_modules(slow={"test_ptx"})
