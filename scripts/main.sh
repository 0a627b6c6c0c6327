#!/usr/bin/env bash
# The main job on the default real model: install, build the SmolLM2-135M U280 project
# (flexllm-w4a4, both kernels, weights, host, Vitis build files) and verify it in C simulation of the
# exact kernel sources against the bit-true golden model (32 new tokens on a real-text prompt).
# Prints two JSON objects: the build summary and the verification.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
flexllm build configs/smollm2_135m_u280.yaml --json
flexllm verify build/smollm2_135m_u280 --max-new-tokens 32 --json \
    --prompt "Assert statements are a convenient way to insert debugging assertions into a program: the simple form is equivalent to"
