"""qonnx CustomOps of the flexllm frontend: the fused Llama operators.

qonnx resolves a node with ``domain == "flexllm_plugin.frontend.ops"`` by importing this module
(``qonnx.custom_op.registry``: the domain string is the module path) and looking the node's op type up in
``__all__`` (class name = op type, version 1), falling back to the ``custom_op`` dict. Every fused graph
also declares the domain in its ``opset_import`` (version 1).
"""

from ._base import FLEXLLM_DOMAIN
from .dynamic_token_quant import DynamicTokenQuant
from .embedding import Embedding
from .last_token import LastToken
from .memory_recall import MemoryRecall
from .online_hadamard import OnlineHadamard
from .quant_attention import QuantAttention
from .quant_linear import QuantLinear
from .residual_add import ResidualAdd
from .rms_norm import RMSNorm
from .rope import RoPE
from .split_heads import SplitHeads
from .swiglu import SwiGLU

custom_op = {
    "Embedding": Embedding,
    "RMSNorm": RMSNorm,
    "DynamicTokenQuant": DynamicTokenQuant,
    "QuantLinear": QuantLinear,
    "SplitHeads": SplitHeads,
    "RoPE": RoPE,
    "QuantAttention": QuantAttention,
    "SwiGLU": SwiGLU,
    "OnlineHadamard": OnlineHadamard,
    "ResidualAdd": ResidualAdd,
    "LastToken": LastToken,
    "MemoryRecall": MemoryRecall,
}

__all__ = list(custom_op)
