"""Test setup: Triton kernels run on CPU tensors through the interpreter."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
