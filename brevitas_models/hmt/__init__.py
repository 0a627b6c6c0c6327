"""HMT (Hierarchical Memory Transformer, arXiv 2405.06067) around the Llama model.

* :mod:`.spec`: sizes and switches (HMTSpec; imported by the config checks, so torch-free);
* :mod:`.memory`: trained parameters T, P_0, W_q, W_k, the recall and the ring cache of memories;
* :mod:`.basis`: the HMT boundary of a rotated backbone;
* :mod:`.wrapper`: segment layout, summary and main passes around the unchanged backbone;
* :mod:`.train`: training of the memory parameters with the backbone frozen, and its checkpoint cache;
* :mod:`.long_context`: long-context perplexity of independent segments, sensory tokens, HMT and a
  sliding window;
* :mod:`.golden_recall`, :mod:`.golden_segments`: the bit-true golden of the recall and of a long prompt's
  segments through the quantized backbone (the generated project's HMT path);
* :mod:`.hardware`: the parameters as the hardware holds them (basis fold, fp32 image);
* :mod:`.export`: QONNX of the recall (fused ``MemoryRecall`` node) and of the key projection.
"""
