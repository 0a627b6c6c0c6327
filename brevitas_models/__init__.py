"""Brevitas Llama models, the quantization suite, calibration, export and the golden model."""

import os

# Measured on this 2-core machine (README, "Preset defaults"): with other work on the cores, torch's OpenMP
# threads that spin while they wait made calibration up to 14x slower (30 s against 2.1 s per SmolLM2 layer);
# on an idle machine spinning is 12-25 % faster. libgomp reads the policy once, when torch loads it, so it is
# chosen here, before anything imports torch, from the 1-minute load average (a value the user set wins).
BUSY_LOAD = 0.75          # 1-minute load average above which other work is taken to share the cores


def openmp_wait_policy(env, load: float):
    """The OMP_WAIT_POLICY to set: None when the user set one or the machine is idle, else PASSIVE."""
    if "OMP_WAIT_POLICY" in env or load <= BUSY_LOAD:
        return None
    return "PASSIVE"


def _apply_openmp_wait_policy() -> None:
    try:
        load = os.getloadavg()[0]
    except OSError:                      # no load average on this platform: leave libgomp's default
        return
    policy = openmp_wait_policy(os.environ, load)
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy


_apply_openmp_wait_policy()
