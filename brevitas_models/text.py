"""Real English text shipped with CPython (``pydoc_data/topics.py``) and a byte-level tokenizer for
random-weight models.

Evaluation takes tokens from the start of the text, calibration from its end, so the two never
overlap (checked by :func:`split_tokens`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import torch


def pydoc_topics_text() -> str:
    """The pydoc topic texts joined in file order with blank lines (about 465 K characters)."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics.values())


def default_prompt_text() -> str:
    """A real-text prompt for demos and the generated C-sim testbench: the first paragraph of the pydoc
    topics ("Assert statements are a convenient way ...")."""
    text = pydoc_topics_text()
    start = text.index("Assert statements")
    return text[start:text.index("\n\n", start)].replace("\n", " ")


def load_text(path: Optional[str] = None) -> str:
    if path is None:
        return pydoc_topics_text()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file not found: {p}")
    text = p.read_text(encoding="utf-8", errors="strict")
    if not text.strip():
        raise ValueError(f"text file is empty: {p}")
    return text


class ByteTokenizer:
    """UTF-8 bytes as token ids (ids 0..255); used for random-weight models, which have no vocabulary."""

    def __init__(self, vocab_size: int):
        if vocab_size < 256:
            raise ValueError(f"a byte tokenizer needs vocab_size >= 256, got {vocab_size}")
        self.vocab_size = vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def encode(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)


def split_tokens(tokens: torch.Tensor, eval_tokens: int, calib_tokens: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(evaluation tokens from the start, calibration tokens from the end); raise if they would overlap."""
    if eval_tokens + calib_tokens > tokens.numel():
        raise ValueError(f"text has {tokens.numel()} tokens, fewer than the {eval_tokens} evaluation + "
                         f"{calib_tokens} calibration tokens requested")
    return tokens[:eval_tokens], tokens[tokens.numel() - calib_tokens:]


def windows(tokens: torch.Tensor, ctx: int) -> torch.Tensor:
    """Non-overlapping windows [N, ctx] (the tail that does not fill a window is dropped)."""
    n = tokens.numel() // ctx
    if n == 0:
        raise ValueError(f"need at least {ctx} tokens for one window, got {tokens.numel()}")
    return tokens[:n * ctx].view(n, ctx)
