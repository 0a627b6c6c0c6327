"""``Gather(table, ids, axis=0)`` with a constant [V, D] table and int64 [1, L] ids -> ``Embedding``."""

import numpy as np

from ._fusion import FusionTransformation
from ._graph import attr


class FuseEmbedding(FusionTransformation):
    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Gather" or node.domain != "" or int(attr(node, "axis", 0)) != 0:
            return
        table, ids = node.input[0], node.input[1]
        meta = idx.const_meta(table)
        if meta is None or len(meta[0]) != 2 or meta[1] != np.float32 or idx.is_const(ids):
            return
        ids_shape, out_shape = idx.shape(ids), idx.shape(node.output[0])
        if ids_shape is None or len(ids_shape) != 2 or out_shape is None or len(out_shape) != 3:
            return
        table = rw.initializer_for(table, None, table)
        rw.replace([node], rw.make_node("Embedding", [ids, table], [node.output[0]], [node]))
