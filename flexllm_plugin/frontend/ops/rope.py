"""``RoPE``: rotary position embedding, rotate-half form."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp


def rope_rows(table: np.ndarray, length: int, position=None) -> np.ndarray:
    """Rows ``position .. position + length - 1`` of ``table`` (rows 0..length-1 without position)."""
    start = 0 if position is None else int(np.asarray(position).reshape(-1)[0])
    if start < 0 or start + length > table.shape[0]:
        raise ValueError(f"RoPE: rows {start}..{start + length - 1} outside a table of {table.shape[0]} rows")
    return table[start:start + length]


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class RoPE(FlexLLMOp):
    """inputs  ``x`` [1, heads, L, d], ``cos_table`` float32 initialiser [T, d], ``sin_table`` [T, d],
            optional ``position`` int64 [1]
    outputs ``y`` [1, heads, L, d] = ``x * cos + rotate_half(x) * sin`` with ``cos``/``sin`` the table
    rows ``position .. position + L - 1`` (rows ``0 .. L - 1`` without a position input) and
    ``rotate_half(x) = concat(-x[..., d/2:], x[..., :d/2])``.

    Prefill: the tables are the graph's [L, d] constants; decode (L = 1): the full tables the replaced
    ``Gather``s read from, ``position`` the graph input. Same float32 operations and order as the
    replaced Mul / Slice / Neg / Concat / Mul / Add (all IEEE-exact)."""

    NUM_INPUTS = (3, 4)

    def get_nodeattr_types(self):
        return {}

    def make_shape_compatible_op(self, model):
        node = self.onnx_node
        return helper.make_node("Identity", [node.input[0]], [node.output[0]])

    def execute_node(self, context, graph):
        inputs = self._inputs(context)
        x, cos_table, sin_table = inputs[:3]
        position = inputs[3] if len(inputs) > 3 else None
        length = x.shape[-2]
        cos = rope_rows(cos_table, length, position)
        sin = rope_rows(sin_table, length, position)
        self._set(context, x * cos + rotate_half(x) * sin)
