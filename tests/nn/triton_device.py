"""Device for the Triton kernel tests: CUDA, else the CPU under Triton's interpreter, else skip the module."""
import os

import pytest
import torch


def triton_test_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    pytest.skip("needs CUDA (or TRITON_INTERPRET=1 for the CPU interpreter)", allow_module_level=True)
