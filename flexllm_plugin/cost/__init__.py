"""Cost model of the FlexLLM HLS modules (one file per module, as FINN HW ops carry theirs)."""
