"""The hls4ml side of flexllm: backend, layer classes, templates, optimizer passes, writer."""
