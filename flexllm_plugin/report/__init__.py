"""``flexllm report``: an HTML page with figures of a built project from the cost model (resources per SLR,
decode roofline, latency per unit, HBM channels), the Pareto fronts of a ``flexllm dse`` result, and the
Vitis HLS synthesis figures next to the modeled ones once ``make hls`` has run (``csynth``)."""
