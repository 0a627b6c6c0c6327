"""Brevitas Llama models, the quantization suite, calibration, export and the golden model."""

import os

# OpenMP threads that wait for work sleep instead of spinning. libgomp reads this once, when torch loads it,
# so it is set before anything imports torch (a value the user set wins). On a 2-core machine with one
# other busy process, torch's 2 spinning threads ran the calibration's small steps about 3x slower than
# sleeping ones (49 s against 18 s of wall time for the same loop; 1 thread: 20 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
