"""U280 (Vitis) project generation: stage kernels with temporal reuse, HBM memory plan, host, build files."""
