import os

# Tiny models: one BLAS / intra-op thread is several times faster than two on this 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest
import torch

# Tests never read or write the user's calibrated-model cache (~/.cache/flexllm).
os.environ["FLEXLLM_CACHE"] = "off"

# Tests run tiny models: one intra-op thread is several times faster than two on this 2-core machine.
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (real model); run with -m slow")
    config.addinivalue_line("markers", "ci: slow test that CI runs anyway (fits the CI budget)")
