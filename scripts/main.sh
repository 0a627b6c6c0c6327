#!/usr/bin/env bash
# The main job on the default real model: install, then float vs flexllm-w4a4 perplexity of
# SmolLM2-135M on real text and the QONNX export of both stages (prints one JSON object).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
flexllm run configs/smollm2_135m_u280.yaml --json "$@"
