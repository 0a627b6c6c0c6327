"""C++ templates of the generated kernels (package data, filled by backend/writer.py and project/kernels.py)."""
