"""Fusion transformations of the flexllm frontend (one qonnx ``Transformation`` per file).

:data:`FUSION_ORDER` is the order :func:`flexllm_plugin.frontend.fuse_llama` applies them in:

0. ``HFFoldConstants``      fold constant-only subgraphs (HF exports: RoPE Cos/Sin, causal mask,
                            repeat-kv Expand shapes; no-op on our exporter's graphs)
   ``HFRemoveNoOpCast``     drop Cast(float32 -> float32) (HF exports: RMSNorm, softmax, RoPE)
   ``HFMergeDuplicateQuant`` one Quant per (inputs, attributes) (HF exports: q/k/v, gate/up input quant)
1. ``FuseRMSNorm``          Pow/ReduceMean/Add/Sqrt/Div/Mul/Mul            -> RMSNorm
2. ``FuseDynamicTokenQuant`` per-token scale / zero-point subgraph + Quant  -> DynamicTokenQuant
3. ``FuseQuantLinear``      weight Quant [-> Transpose] -> MatMul           -> QuantLinear (needs 2.)
4. ``FuseOnlineHadamard``   MatMul with the Hadamard constant              -> OnlineHadamard
                            (after 3., so only non-linear MatMuls with a constant are left)
5. ``FuseSwiGLU``           Sigmoid/Mul/Mul                                -> SwiGLU
6. ``FuseSplitHeads``       Reshape -> Transpose(0,2,1,3)                  -> SplitHeads
7. ``FuseRoPE``             Mul/Slice/Neg/Concat/Mul/Add (+ decode Gathers) -> RoPE
8. ``FuseAttention``        scale/Q-K-V-P Quants/repeat-kv/MatMul/mask/Softmax/MatMul/merge -> QuantAttention
                            (after 6. and 7.: it reads their outputs; also HF eager attention:
                            power-of-two score scaling, Expand repeat-kv)
9. ``FuseEmbedding``        Gather(table, ids)                             -> Embedding
                            (after 7., which leaves decode's cos/sin Gathers dead and removed)
10. ``FuseLastToken``       Gather(x, -1, axis=1)                          -> LastToken
11. ``FuseResidualAdd``     remaining Add of two [1, L, D] tensors         -> ResidualAdd (last)
"""

from .fuse_attention import FuseAttention
from .fuse_dynamic_token_quant import FuseDynamicTokenQuant
from .fuse_embedding import FuseEmbedding
from .fuse_last_token import FuseLastToken
from .fuse_online_hadamard import FuseOnlineHadamard
from .fuse_quant_linear import FuseQuantLinear
from .fuse_residual_add import FuseResidualAdd
from .fuse_rmsnorm import FuseRMSNorm
from .fuse_rope import FuseRoPE
from .fuse_split_heads import FuseSplitHeads
from .fuse_swiglu import FuseSwiGLU
from .hf_fold_constants import HFFoldConstants
from .hf_merge_duplicate_quant import HFMergeDuplicateQuant
from .hf_remove_noop_cast import HFRemoveNoOpCast
from .remove_dead_nodes import RemoveDeadNodes

FUSION_ORDER = (HFFoldConstants, HFRemoveNoOpCast, HFMergeDuplicateQuant,
                FuseRMSNorm, FuseDynamicTokenQuant, FuseQuantLinear, FuseOnlineHadamard, FuseSwiGLU,
                FuseSplitHeads, FuseRoPE, FuseAttention, FuseEmbedding, FuseLastToken, FuseResidualAdd)

__all__ = [c.__name__ for c in FUSION_ORDER] + ["RemoveDeadNodes", "FUSION_ORDER"]
