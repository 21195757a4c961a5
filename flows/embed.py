"""Embed stage: turn sources into cached embedding vectors.

:func:`embed_source` is what other stages call: it returns the vectors of a source for an encoder
config, computing them only when the cache (``embeddings`` table, keyed by the source's content hash
and :meth:`EncoderConfig.hash`) has no entry. :func:`embed_flow` embeds every source of a run config
that the encoder is asked to (and able to) embed. The compute itself is :func:`tasks.embed.encode_source`,
wrapped as the Prefect task :data:`encode_source_task` inside flows.

``winnow embed CONFIG`` is the pipeline with only this stage (like ``winnow run CONFIG --only embed``, one
run row ``embed-<hash>``), inside :func:`embedding_required`: there a config whose encoder embeds none
of its sources is refused by :func:`preflight`, before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE

from configs.base import RunConfig
from configs.encoder import EncoderConfig
from storage.db import Store
from storage.embeddings import EmbeddingRecord, find_embeddings, load_embeddings, save_embeddings
from storage.sources import load_source, load_source_by_id, registered_rows
from tasks.data import SourceData
from tasks.embed import EncodeResult, check_fits, encode_source
from tasks.errors import WinnowError

__all__ = ["EmbedOutcome", "embed_flow", "embedding_required", "preflight", "embed_source", "embed_source_outcome",
           "encode_source_task"]


@dataclass(frozen=True)
class EmbedOutcome:
    """Vectors of a source (rows aligned with the ``SourceData`` passed in) and where they came from."""

    vectors: np.ndarray
    record: EmbeddingRecord
    cached: bool
    seconds: float


# The Prefect task around the pure compute. Results are numpy arrays, so Prefect must not pickle
# them into result storage: the embeddings table is the cache.
encode_source_task = task(name="encode-source", cache_policy=NO_CACHE, persist_result=False)(encode_source)


def _full_source(store: Store, source: SourceData) -> SourceData:
    """The whole registered source when ``source`` is a row subset of it (fitting uses all rows)."""
    n_rows = registered_rows(store, source.source_id, source.content_hash)
    if n_rows is not None and n_rows > source.n:
        return load_source_by_id(store, source.source_id)
    return source


def _align(row_index: np.ndarray, vectors: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    """Rows of ``vectors`` (keyed by ``row_index``) in the order of ``wanted``."""
    if row_index.shape == wanted.shape and np.array_equal(row_index, wanted):
        return vectors
    order = np.argsort(row_index, kind="stable")
    sorted_idx = row_index[order]
    pos = np.searchsorted(sorted_idx, wanted)
    pos_c = np.minimum(pos, max(len(sorted_idx) - 1, 0))
    if len(sorted_idx) == 0 or not np.array_equal(sorted_idx[pos_c], wanted):
        missing = int((sorted_idx[pos_c] != wanted).sum()) if len(sorted_idx) else len(wanted)
        raise WinnowError(f"{what}: {missing} requested row(s) are not in the stored embeddings; rerun the embed stage")
    return vectors[order[pos_c]]


def embed_source_outcome(
    store: Store,
    source: SourceData,
    encoder: EncoderConfig,
    *,
    progress: bool = True,
    compute: Callable[..., EncodeResult] = encode_source,
) -> EmbedOutcome:
    """Like :func:`embed_source`, also saying whether the vectors came from the cache."""
    t0 = time.perf_counter()
    check_fits(source, encoder)
    ehash = encoder.hash(image_shape=source.image_shape)
    what = f"{encoder.kind} embeddings of source {source.name!r}"
    rec = find_embeddings(store, source.content_hash, ehash)
    if rec is not None:
        row_index, vectors = load_embeddings(store, rec)
        return EmbedOutcome(_align(row_index, vectors, source.row_index, what), rec, True, time.perf_counter() - t0)
    full = _full_source(store, source)
    res = compute(full, encoder, progress=progress)
    rec = save_embeddings(
        store,
        source_id=full.source_id,
        source_hash=full.content_hash,
        row_index=full.row_index,
        encoder_kind=encoder.kind,
        encoder_hash=ehash,
        encoder_config_json=encoder.cache_json(),
        vectors=res.vectors,
        weights=res.weights,
        info=res.info,
    )
    vectors = _align(full.row_index, res.vectors, source.row_index, what)
    return EmbedOutcome(vectors, rec, False, time.perf_counter() - t0)


def embed_source(store: Store, source: SourceData, encoder: EncoderConfig, *, progress: bool = True) -> np.ndarray:
    """(n, dim) float32 embeddings of ``source``'s rows (in its row order), cached in the store.

    Keyed by ``source.content_hash`` and ``encoder.hash()`` (with the source's image shape for ssl_cnn): a second call (any run, any process)
    reads the Parquet file instead of recomputing. Fitted encoders (ssl_cnn, pca) always fit on
    the whole registered source (its ``fit_on`` split), even when ``source`` is a row subset.
    """
    return embed_source_outcome(store, source, encoder, progress=progress).vectors


def sources_to_embed(config: RunConfig, store: Store) -> tuple[list[SourceData], list[str]]:
    """The config's sources the encoder should embed, and lines naming those skipped (and why).

    With ``encoder.sources`` unset every source is tried and those the kind cannot embed (text for
    ssl_cnn, images for minilm) are skipped; a source named explicitly must fit, or it is an error.
    """
    enc = config.encoder
    if enc is None:
        return [], []
    names = [s.name for s in config.sources]
    if enc.sources is not None:
        unknown = [n for n in enc.sources if n not in names]
        if unknown:
            raise WinnowError(f"encoder.sources names {unknown[0]!r}, which is not a source of this config (have: {', '.join(names)})")
    chosen, skipped = [], []
    for name in names:
        if not enc.wants(name):
            continue
        src = load_source(store, name)
        try:
            check_fits(src, enc)
        except WinnowError as err:
            if enc.sources is not None:
                raise
            skipped.append(f"skipped {name}: {err}")
            continue
        chosen.append(src)
    return chosen, skipped


#: set by :func:`embedding_required`: the run exists to embed, so embedding nothing is an error
_REQUIRED: ContextVar[bool] = ContextVar("winnow_embedding_required", default=False)


@contextmanager
def embedding_required() -> Iterator[None]:
    """Within the block, :func:`preflight` refuses a config whose encoder would embed none of its sources
    (``winnow embed``; in a whole pipeline the encoder may serve only some stages, so there it is not an error)."""
    token = _REQUIRED.set(True)
    try:
        yield
    finally:
        _REQUIRED.reset(token)


def nothing_to_embed(config: RunConfig, skipped: list[str]) -> str:
    """One line: why the encoder embeds no source of ``config`` (the sources and their reasons)."""
    enc = config.encoder
    why = "; ".join(line.removeprefix("skipped ") for line in skipped)
    if not why:
        wanted = "encoder.sources is empty" if enc.sources is not None else "the config has no sources"
        return f"nothing to embed: encoder kind {enc.kind!r} was given no source ({wanted})"
    return f"nothing to embed: encoder kind {enc.kind!r} fits none of the sources ({why})"


def preflight(config: RunConfig, db: str) -> None:
    """Before any stage writes: every source the encoder is named to embed can be embedded by its kind
    (:func:`sources_to_embed`, the same selection the stage makes, on the pinned versions); inside
    :func:`embedding_required`, at least one source is embedded."""
    if config.encoder is not None:
        chosen, skipped = sources_to_embed(config, Store(db))
        if not chosen and _REQUIRED.get():
            raise WinnowError(nothing_to_embed(config, skipped))


@flow(name="embed", log_prints=True)
def embed_flow(config: RunConfig, db: str, run_id: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Embed every source of ``config`` that its ``encoder`` section covers (cached by content)."""
    if config.encoder is None:
        return {"embeddings": [], "lines": ["no encoder section: nothing to embed"]}
    store = Store(db)
    enc = config.encoder
    chosen, lines = sources_to_embed(config, store)
    compute = lambda src, e, progress: encode_source_task(src, e, progress=progress)  # noqa: E731
    rows = []
    for src in chosen:
        out = embed_source_outcome(store, src, enc, progress=progress, compute=compute)
        rows.append({
            "source": src.name, "kind": enc.kind, "dim": out.record.dim, "rows": out.record.n_rows,
            "cached": out.cached, "seconds": round(out.seconds, 2), "embedding_id": out.record.embedding_id,
        })
        state = "cached" if out.cached else f"computed in {out.seconds:.1f} s"
        lines.append(f"{src.name}: {enc.kind} {out.record.n_rows} x {out.record.dim} ({state})")
    return {"embeddings": rows, "lines": lines}
