"""Design-space search (``flexllm dse``): the FlexLLM knobs explored with the cost model under a board's
budget. ``space`` declares the knobs, ``evaluate`` runs one candidate through the cost model, ``search``
finds the best design and the Pareto fronts, ``run`` ties them to a config file and writes the best
configuration as YAML for ``flexllm build``."""
