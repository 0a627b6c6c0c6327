"""Final check of a fused graph: every node must be a flexllm frontend op."""

from __future__ import annotations

from typing import List, Tuple

from .ops import custom_op
from .ops._base import FLEXLLM_DOMAIN

FUSED_OP_TYPES = tuple(custom_op)


class UnsupportedNodeError(ValueError):
    """Raised by :func:`check_fully_fused` (and so by ``fuse_llama``): nodes left that no fusion
    recognised. ``nodes`` lists them as (node name, op type, domain)."""

    def __init__(self, nodes: List[Tuple[str, str, str]]):
        self.nodes = list(nodes)
        lines = [f"node '{name}' (op {op_type}{'' if domain in ('', None) else ', domain ' + domain}) "
                 f"is not a recognised Llama pattern" for name, op_type, domain in self.nodes]
        super().__init__(f"{len(lines)} node(s) not fused into the {FLEXLLM_DOMAIN} ops:\n  " + "\n  ".join(lines))


def check_fully_fused(model) -> None:
    """Raise :class:`UnsupportedNodeError` naming every node that is not a flexllm frontend op."""
    graph = model.graph if hasattr(model, "graph") else model.model.graph
    bad = [(n.name, n.op_type, n.domain) for n in graph.node
           if n.domain != FLEXLLM_DOMAIN or n.op_type not in FUSED_OP_TYPES]
    if bad:
        raise UnsupportedNodeError(bad)
