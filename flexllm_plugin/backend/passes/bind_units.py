"""Stage-split scheduling: bind the stage's layers to the kernel's shared hardware units.

A FlexLLM kernel has ONE instance of each unit (``layers/flexllm_schedule.h``): the linear engine,
RMSNorm, the per-token quantizer, attention, SwiGLU and the Hadamard transform. This pass turns the
folded graph (``prologue | ONE decoder block | tail``, after ``fold_decoder_blocks`` and
``plan_memory``) into the kernel's schedule:

* every block layer and tail layer gets the attribute ``unit_call`` (the row of the schedule table the
  kernel executes: unit, sizes, external-memory offset and per-layer stride), or none when it is folded
  into another unit's call (``FlexResidualAdd`` into the linear that feeds it: the engine adds its
  output into the residual stream; ``FlexLastToken`` into the next RMSNorm, which then reads the last
  token only);
* every linear gets its destination role (``q``, ``k``, ``v``, ``gate``, ``up``, ``residual``, ``logits``)
  from the layer that consumes it;
* every quantizer and linear call carries its input kind (``kind``: the quantization spec's kind of that
  site, ``Quantization.InputQuantOverrides``) and every quantizer call its clip ratio (``clip``,
  ``Quantization.InputClipRatios``); when the calls mix uint4_asym and int8 the ONE engine is a per-call
  engine (``input_kind`` ``mixed`` = ``flexllm::INPUT_PER_CALL``: int8 calls as two nibble passes on the
  4-bit datapath, ``layers/flexllm_linear.h``), never a second engine;
* ``FlexLLM.Schedule`` records the block and tail order, the buffer geometry of the roles and the ONE
  engine configuration (maxima over every call, the stage's lanes).

The pass also proves that the graph fits the fixed buffer roles of the block (RMSNorm reads the residual
stream, the quantizer reads what the previous element-wise unit wrote, and so on) and raises
``ValueError`` naming the layer otherwise, so nothing reaches the writer that the units cannot run.
"""

from __future__ import annotations

from hls4ml.model.optimizer import ModelOptimizerPass

from ..block import split_blocks
from ..graph import consumers, producer

UNIT_OF_CLASS = {"FlexRMSNorm": "UNIT_RMSNORM", "FlexTokenQuant": "UNIT_QUANT", "FlexQuantLinear": "UNIT_LINEAR",
                 "FlexAttention": "UNIT_ATTENTION", "FlexSwiGLU": "UNIT_SWIGLU", "FlexHadamard": "UNIT_HADAMARD"}
FOLDED = ("FlexResidualAdd", "FlexLastToken")
# units that write the pre-quantization buffer x (what a FlexTokenQuant may read)
WRITES_X = ("FlexRMSNorm", "FlexAttention", "FlexSwiGLU", "FlexHadamard")
DEST = {("FlexAttention", 0): "DEST_Q", ("FlexAttention", 1): "DEST_K", ("FlexAttention", 2): "DEST_V",
        ("FlexSwiGLU", 0): "DEST_GATE", ("FlexSwiGLU", 1): "DEST_UP"}


class BindUnits(ModelOptimizerPass):
    name = "bind_units"

    def __init__(self):
        pass

    def transform(self, model):
        cfg = model.config.config["FlexLLM"]
        prologue, blocks, tail = split_blocks(model.get_layers())
        if len(blocks) != 1:
            raise ValueError(f"bind_units: expected ONE folded decoder block, found {len(blocks)} "
                             "(fold_decoder_blocks did not run?)")
        block = blocks[0]
        residual = {producer(model, cfg["BlockInput"]).name}      # layers whose output is the residual stream
        block_calls = [c for c in (_bind(model, layer, residual, False) for layer in block) if c]
        tail_calls = [c for c in (_bind(model, layer, residual, True) for layer in tail) if c]
        linears = [layer for layer in model.get_layers() if layer.class_name == "FlexQuantLinear"]
        if not tail_calls or tail_calls[-1]["unit"] != "UNIT_LINEAR" or tail_calls[-1]["flag"] != "DEST_LOGITS":
            raise ValueError("bind_units: the stage must end with the LM head (a linear on the last token)")
        for layer in linears:
            if layer.get_attr("weight_bits") != linears[0].get_attr("weight_bits"):
                raise ValueError(f"bind_units: linear '{layer.name}' has weight_bits {layer.get_attr('weight_bits')!r}, "
                                 f"the engine is built for {linears[0].get_attr('weight_bits')!r} ('{linears[0].name}'): "
                                 "one engine per kernel serves every linear")
        engine_kind = engine_input_kind(linears)
        attn = [layer for layer in block if layer.class_name == "FlexAttention"]
        if len(attn) != 1:
            raise ValueError(f"bind_units: the decoder block needs exactly one attention, found {len(attn)}")
        had = [layer for layer in block if layer.class_name == "FlexHadamard"]
        if len(had) > 1:
            raise ValueError(f"bind_units: at most one online Hadamard per block, found {len(had)}")
        emb = prologue[-1]
        a = attn[0]
        row = int(a.get_attr("heads")) * int(a.get_attr("head_dim"))
        widths = [int(emb.get_attr("n_out"))] + [int(layer.get_attr("n_in")) for layer in model.get_layers()
                                                 if layer.get_attr("n_in") is not None]
        widths += [int(layer.get_attr("n_out")) for layer in linears[:-1]] + [row]
        cfg["Schedule"] = {
            "block": block_calls, "tail": tail_calls,
            "max_tokens": int(emb.get_attr("n_tokens")), "hidden": int(emb.get_attr("n_out")),
            "width": max(widths), "row": row, "vocab": int(linears[-1].get_attr("n_out")),
            "max_in": max(int(layer.get_attr("n_in")) for layer in linears),
            "max_out": max(int(layer.get_attr("n_out")) for layer in linears),
            "weight_bits": int(linears[0].get_attr("weight_bits")), "input_kind": engine_kind,
            "attention": a.name, "hadamard": had[0].name if had else None, "embedding": emb.name,
            "heads": int(a.get_attr("heads")), "kv_heads": int(a.get_attr("kv_heads")),
            "head_dim": int(a.get_attr("head_dim")),
            "hadamard_m": int(had[0].get_attr("m")) if had else 0, "hadamard_n": int(had[0].get_attr("n_in")) if had else 0,
        }
        return False


MIXED = "mixed"        # engine input kind of a schedule that mixes uint4_asym and int8 calls (INPUT_PER_CALL)


def engine_input_kind(linears) -> str:
    """The input kind of the stage's ONE linear engine: the kind every linear reads, or ``mixed`` (the kind
    comes with each call) when they differ; mixed kinds run on the int4 weight datapath only."""
    kinds = {layer.get_attr("input_kind") for layer in linears}
    if len(kinds) == 1:
        return kinds.pop()
    bits = int(linears[0].get_attr("weight_bits"))
    if bits != 4:
        names = ", ".join(f"'{layer.name}' {layer.get_attr('input_kind')}" for layer in linears)
        raise ValueError(f"bind_units: linears with different input kinds ({names}) need int4 weights (the per-call "
                         f"engine runs int8 calls as two nibble passes on the int4 datapath); the weights are int{bits}")
    return MIXED


def _bind(model, layer, residual: set, in_tail: bool):
    """The unit call of one layer (a dict of C++ field values), or None if the layer is folded."""
    cls = layer.class_name
    src = producer(model, layer.inputs[0]) if layer.inputs else None
    if cls == "FlexResidualAdd":
        srcs = [producer(model, name) for name in layer.inputs]
        kinds = sorted("residual" if s.name in residual else s.class_name for s in srcs)
        if kinds != ["FlexQuantLinear", "residual"]:
            raise ValueError(f"bind_units: residual add '{layer.name}' must add a linear's output to the residual "
                             f"stream, its inputs come from {[s.name for s in srcs]}")
        residual.add(layer.name)
        return None
    if cls == "FlexLastToken":
        if src is None or src.name not in residual:
            raise ValueError(f"bind_units: '{layer.name}' must select the last token of the residual stream")
        residual.add(layer.name)
        return None
    if cls not in UNIT_OF_CLASS:
        raise ValueError(f"bind_units: no hardware unit runs '{layer.name}' ({cls})")
    call = {"unit": UNIT_OF_CLASS[cls], "d_in": int(layer.get_attr("n_in") or 0), "d_out": 0, "flag": "0",
            "w_off": (0, 0), "p_off": (0, 0), "eps": 0.0, "kind": None, "clip": 1.0, "layer": layer.name}
    if cls == "FlexRMSNorm":
        if src is None or src.name not in residual:
            raise ValueError(f"bind_units: RMSNorm '{layer.name}' must read the residual stream (reads "
                             f"'{src.name if src else None}')")
        call.update(w_off=layer.get_attr("w_off_pair"), eps=float(layer.get_attr("eps")),
                    flag="1" if src.class_name == "FlexLastToken" else "0")
    elif cls == "FlexTokenQuant":
        if src is None or src.class_name not in WRITES_X:
            raise ValueError(f"bind_units: quantizer '{layer.name}' reads '{src.name if src else None}', which does "
                             "not write the activation buffer x")
        clip = float(layer.get_attr("clip", 1.0))
        if not 0.0 < clip <= 1.0 or (clip != 1.0 and layer.get_attr("kind") != "uint4_asym"):
            raise ValueError(f"bind_units: quantizer '{layer.name}' has clip ratio {clip} (need (0, 1], uint4_asym only)")
        call.update(kind=layer.get_attr("kind"), clip=clip)
    elif cls == "FlexQuantLinear":
        if src is None or src.class_name != "FlexTokenQuant":
            raise ValueError(f"bind_units: linear '{layer.name}' must read a per-token quantizer's codes")
        if layer.get_attr("input_kind") != src.get_attr("kind"):
            raise ValueError(f"bind_units: linear '{layer.name}' reads {layer.get_attr('input_kind')} codes, its quantizer "
                             f"'{src.name}' writes {src.get_attr('kind')}")
        call.update(d_out=int(layer.get_attr("n_out")), w_off=layer.get_attr("w_off_pair"),
                    p_off=layer.get_attr("p_off_pair"), flag=_dest(model, layer, in_tail), kind=layer.get_attr("input_kind"))
    elif cls == "FlexSwiGLU":
        if {producer(model, n).class_name for n in layer.inputs} != {"FlexQuantLinear"}:
            raise ValueError(f"bind_units: SwiGLU '{layer.name}' must read the gate and up projections")
    elif cls == "FlexHadamard":
        if src is None or src.class_name not in WRITES_X:
            raise ValueError(f"bind_units: Hadamard '{layer.name}' must transform the activation buffer x in place")
    layer.set_attr("unit_call", call)
    return call


def _dest(model, layer, in_tail: bool) -> str:
    users = consumers(model, layer.outputs[0])
    if in_tail:
        if users:
            raise ValueError(f"bind_units: the LM head '{layer.name}' output must be the stage output")
        return "DEST_LOGITS"
    if len(users) != 1:
        raise ValueError(f"bind_units: linear '{layer.name}' output has {len(users)} consumers (one expected)")
    user = users[0]
    if user.class_name == "FlexResidualAdd":
        return "DEST_RESIDUAL"
    key = (user.class_name, user.inputs.index(layer.outputs[0]))
    if key not in DEST:
        raise ValueError(f"bind_units: linear '{layer.name}' feeds '{user.name}' ({user.class_name}) input "
                         f"{key[1]}: no buffer role for it")
    return DEST[key]
