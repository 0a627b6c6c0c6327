"""FlexLLM optimizer passes and templates (auto-registered by hls4ml: one file per concern)."""
