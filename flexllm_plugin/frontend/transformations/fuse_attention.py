"""Attention core -> ``QuantAttention``.

Matched from the ``Softmax`` (commutative operands in either order, every Quant optional)::

    q_rot -> Mul(softmax_scale) -> [Quant s_q] ---------------------------------> MatMul -> [Add mask] -> Softmax
    k_rot -> [Quant s_k] = k_new -> [Concat([Quant s_k](past_key), k_new, axis=2)]
          -> [Unsqueeze(2) -> Tile(1,1,rep,1,1) -> Reshape(1,H,T,d)] -> Transpose(0,1,3,2) --^
    Softmax -> [Quant s_p] -> MatMul(., V) -> Transpose(0,2,1,3) -> Reshape(1,L,H*d) = attn
    v -> [Quant s_v] = v_new -> [Concat(past_value)] -> [repeat kv] -----^

Hugging Face eager attention scales the scores instead: ``Mul(MatMul(q_rot, K^T), scaling)`` (no Q
quantizer) is accepted when ``scaling`` is a power of two (then it equals ``MatMul(q_rot * scaling, K^T)``
bit for bit); its repeat-kv is ``Reshape(Expand(Unsqueeze(src, 2), [1, KVH, rep, T, d]))``.

The mask must equal ``ops.quant_attention.causal_mask`` (0 / float32 min) exactly. In decode graphs
the past K (V) ``Quant`` must be present exactly when the K (V) quantizer is, with the same scale.
Without a K (V) quantizer ``k_new`` is ``k_rot`` itself: its producer's output is then renamed so that
the fused node can output the original tensor name (a graph output such as ``present_key_i``)."""

import numpy as np

from ..ops.quant_attention import causal_mask
from ._fusion import FusionTransformation
from ._graph import attr, commutative_split, static_quant


def _per_head(q, n):
    """Scale list of a static Quant with zero point 0, one value per head (n), or None."""
    if q is None or np.any(q["zero_point"] != 0):
        return None
    s = q["scale"]
    if s.size == 1:
        return [float(s.reshape(-1)[0])] * n
    if s.size != n or (s.ndim == 4 and s.shape[1] != n):
        return None
    return [float(v) for v in s.reshape(-1)]


def _exact_power_of_two(value) -> bool:
    """``value`` is a positive float32 power of two (scaling by it is exact, so it commutes with MatMul)."""
    if value is None:
        return False
    v = np.float32(value)
    return bool(v > 0 and np.isfinite(v) and np.frexp(v)[0] == 0.5)


class FuseAttention(FusionTransformation):
    def _repeat_kv(self, idx, t):
        """(source, n_rep, nodes) for repeat-kv ``Reshape(Tile(Unsqueeze(src, 2)))`` or (HF ``repeat_kv``)
        ``Reshape(Expand(Unsqueeze(src, 2), [1, KVH, rep, T, d]))``, else (t, 1, [])."""
        rs = idx.prod(t, "Reshape")
        tile = rs and idx.prod(rs.input[0], ("Tile", "Expand"))
        unsq = tile and idx.prod(tile.input[0], "Unsqueeze")
        if unsq is None:
            return t, 1, []
        axes = attr(unsq, "axes")
        if axes is None and len(unsq.input) > 1:
            a = idx.const(unsq.input[1])
            axes = None if a is None else [int(v) for v in a.reshape(-1)]
        reps = idx.const(tile.input[1])
        src_shape, out_shape = idx.shape(unsq.input[0]), idx.shape(rs.output[0])
        if axes != [2] or reps is None or src_shape is None or out_shape is None or len(src_shape) != 4:
            return None
        reps = [int(v) for v in reps.reshape(-1)]
        if tile.op_type == "Expand":    # target shape -> repeats (every other axis must keep its size)
            if len(reps) != 5 or idx.shape(tile.output[0]) != reps:
                return None
            reps = [1, 1, reps[2], 1, 1] if [r for i, r in enumerate(reps) if i != 2] == src_shape else [0]
        if len(reps) != 5 or reps[:2] != [1, 1] or reps[3:] != [1, 1]:
            return None
        rep = reps[2]
        if out_shape != [src_shape[0], src_shape[1] * rep, src_shape[2], src_shape[3]]:
            return None
        return unsq.input[0], rep, [unsq, tile, rs]

    def _cache(self, idx, t):
        """(past_source, new, concat) for ``Concat(past, new, axis=2)``, or (None, t, None)."""
        cat = idx.prod(t, "Concat")
        if cat is None:
            return None, t, None
        shape = idx.shape(cat.output[0])
        if len(cat.input) != 2 or shape is None or int(attr(cat, "axis", 0)) not in (2, 2 - len(shape)):
            return None
        return cat.input[0], cat.input[1], cat

    def match(self, rw, node):
        idx = rw.idx
        if node.op_type != "Softmax" or node.domain != "":
            return
        if int(attr(node, "axis", -1)) not in (-1, 3):
            return
        nodes = [node]
        internal = []          # tensors that must be used only inside the pattern
        # scores (+ mask)
        scores = node.input[0]
        causal, mask_val = 0, None
        add = idx.prod(scores, "Add")
        if add is not None:
            split = commutative_split(idx, add, idx.is_const)
            if split is None:
                return
            mask_name, scores_mm = split
            mask_val = idx.const(mask_name)
            causal = 1
            nodes.append(add)
            internal.append(add.output[0])
        else:
            scores_mm = scores
        qk = idx.prod(scores_mm, "MatMul")
        post = None
        if qk is None:
            # HF eager attention: Mul(MatMul(q, K^T), scaling)
            post = idx.prod(scores_mm, "Mul")
            split = post and commutative_split(idx, post, lambda t: idx.scalar(t) is not None)
            if split is None:
                return
            post_scale, scores_mm = split
            qk = idx.prod(scores_mm, "MatMul")
            if qk is None or not _exact_power_of_two(idx.scalar(post_scale)):
                return
            nodes.append(post)
            internal.append(post.output[0])
        nodes.append(qk)
        internal.append(qk.output[0])
        q_in, kt = qk.input
        # Q
        qq = static_quant(idx, idx.prod(q_in, "Quant"))
        if post is not None:
            # MatMul(q, K^T) * 2^k == MatMul(q * 2^k, K^T) bit for bit (no Q quantizer between them)
            if idx.prod(q_in, "Quant") is not None:
                return
            scale_name, q_rot = post_scale, q_in
        else:
            if qq is not None:
                if qq["signed"] != 1 or qq["narrow"] != 0:
                    return
                nodes.append(qq["node"])
                internal.append(q_in)
                q_scaled = qq["x"]
            else:
                q_scaled = q_in
            mul = idx.prod(q_scaled, "Mul")
            if mul is None:
                return
            split = commutative_split(idx, mul, lambda t: idx.scalar(t) is not None)
            if split is None:
                return
            scale_name, q_rot = split
            nodes.append(mul)
            internal.append(mul.output[0])
        # K
        tr = idx.prod(kt, "Transpose")
        if tr is None or list(attr(tr, "perm", [])) != [0, 1, 3, 2]:
            return
        nodes.append(tr)
        internal.append(kt)
        kv = {}
        for which, start in (("k", tr.input[0]), ("v", None)):
            if which == "v":
                # P
                sm_cons = idx.cons(node.output[0])
                if len(sm_cons) != 1:
                    return
                pq = static_quant(idx, sm_cons[0]) if sm_cons[0].op_type == "Quant" else None
                if pq is not None:
                    if pq["signed"] != 0 or pq["narrow"] != 0:
                        return
                    nodes.append(pq["node"])
                    internal.append(node.output[0])
                    p_out = pq["node"].output[0]
                else:
                    p_out = node.output[0]
                internal.append(p_out)
                av = idx.cons(p_out)
                if len(av) != 1 or av[0].op_type != "MatMul" or av[0].domain != "" or av[0].input[0] != p_out:
                    return
                av = av[0]
                nodes.append(av)
                start = av.input[1]
            rep = self._repeat_kv(idx, start)
            if rep is None:
                return
            full, n_rep, rep_nodes = rep
            nodes += rep_nodes
            internal += [n.output[0] for n in rep_nodes]
            cache = self._cache(idx, full)
            if cache is None:
                return
            past_src, new, cat = cache
            if cat is not None:
                nodes.append(cat)
                internal.append(cat.output[0])
            newq = static_quant(idx, idx.prod(new, "Quant"))
            if newq is not None:
                if newq["signed"] != 1 or newq["narrow"] != 0:
                    return
                nodes.append(newq["node"])
            past, pastq = past_src, None
            if past_src is not None:
                pastq = static_quant(idx, idx.prod(past_src, "Quant"))
                if pastq is not None:
                    if newq is None or pastq["signed"] != 1 or pastq["narrow"] != 0 or pastq["bits"] != newq["bits"]:
                        return
                    nodes.append(pastq["node"])
                    internal.append(past_src)
                    past = pastq["x"]
                elif newq is not None:
                    return          # the fused node re-quantizes the past with s_k: must be in the graph
            kv[which] = {"src": newq["x"] if newq else new, "new": new, "q": newq, "pastq": pastq,
                         "past": past, "n_rep": n_rep, "cat": cat}
        # output: Transpose(0, 2, 1, 3) -> Reshape [1, L, H*d]
        cons = idx.cons(av.output[0])
        if len(cons) != 1 or cons[0].op_type != "Transpose" or list(attr(cons[0], "perm", [])) != [0, 2, 1, 3]:
            return
        tr_out = cons[0]
        cons = idx.cons(tr_out.output[0])
        if len(cons) != 1 or cons[0].op_type != "Reshape" or cons[0].domain != "":
            return
        rs_out = cons[0]
        nodes += [tr_out, rs_out]
        internal += [av.output[0], tr_out.output[0]]
        # shapes and consistency
        k, v = kv["k"], kv["v"]
        qs, ks, vs, os_ = (idx.shape(t) for t in (q_rot, k["src"], v["src"], rs_out.output[0]))
        if None in (qs, ks, vs, os_) or len(qs) != 4 or len(ks) != 4 or len(vs) != 4:
            return
        _, heads, q_len, dim = qs
        kv_heads = ks[1]
        if ks != [1, kv_heads, q_len, dim] or vs != ks or os_ != [1, q_len, heads * dim] or qs[0] != 1:
            return
        if (k["cat"] is None) != (v["cat"] is None) or k["n_rep"] != v["n_rep"] or heads != kv_heads * k["n_rep"]:
            return
        past_len = idx.shape(k["past"])[2] if k["cat"] is not None and idx.shape(k["past"]) else 0
        if k["cat"] is not None and (idx.shape(k["past"]) != [1, kv_heads, past_len, dim]
                                     or idx.shape(v["past"]) != [1, kv_heads, past_len, dim]):
            return
        if causal:
            if mask_val is None or mask_val.size != q_len * (past_len + q_len) or mask_val.dtype != np.float32:
                return
            if not np.array_equal(mask_val.reshape(q_len, past_len + q_len), causal_mask(q_len, past_len + q_len)):
                return
        s_q = _per_head(qq, heads) if qq else []
        s_p = _per_head(pq, heads) if pq else []
        s_k = _per_head(k["q"], kv_heads) if k["q"] else []
        s_v = _per_head(v["q"], kv_heads) if v["q"] else []
        if None in (s_q, s_p, s_k, s_v):
            return
        for d, s in ((k, s_k), (v, s_v)):
            if d["pastq"] is not None and _per_head(d["pastq"], kv_heads) != s:
                return
        bits = {q["bits"] for q in (qq, k["q"], v["q"]) if q}
        if len(bits) > 1:
            return
        # internal tensors: used only inside the pattern (k_new / v_new may be used anywhere: re-produced)
        for t in internal:
            if not idx.only_used_by(t, nodes):
                return
        if rw.claimed(nodes):
            return
        inputs = [q_rot, k["src"], v["src"]]
        for i, d in ((1, k), (2, v)):
            if d["q"] is None:
                # k_new is k_rot itself: rename its producer's output, the fused node outputs the name
                prod = idx.producer.get(d["new"])
                if prod is None or d["new"] in idx.graph_inputs or rw.claimed([prod]):
                    return
        for i, d in ((1, k), (2, v)):
            if d["q"] is None:
                prod = idx.producer[d["new"]]
                fresh = rw.fresh_tensor(d["new"] + "_pre")
                prod.output[list(prod.output).index(d["new"])] = fresh
                inputs[i] = fresh
        if k["cat"] is not None:
            inputs += [k["past"], v["past"]]
        new_node = rw.make_node(
            "QuantAttention", inputs, [rs_out.output[0], k["new"], v["new"]], nodes,
            softmax_scale=float(np.float32(idx.scalar(scale_name))), s_q=s_q, s_k=s_k, s_v=s_v, s_p=s_p,
            causal=causal, qkv_bits=bits.pop() if bits else 8, p_bits=pq["bits"] if pq else 8,
            num_heads=int(heads), num_kv_heads=int(kv_heads), head_dim=int(dim))
        rw.replace(nodes, new_node)
