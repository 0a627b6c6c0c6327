"""ONNX handlers: fused flexllm QONNX ops -> FlexLLM hls4ml layer dictionaries."""
