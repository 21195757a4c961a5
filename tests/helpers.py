"""Shared test helpers: DuckDB fingerprints (to prove a failed command changed nothing) and data makers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np


def db_fingerprint(path: Path) -> dict | None:
    """Row count and an order-independent hash of every table, or None when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        out = {}
        for t in tables:
            out[t] = con.execute(f'SELECT count(*), coalesce(bit_xor(hash(x)), 0) FROM "{t}" x').fetchall()[0]
        return out
    finally:
        con.close()


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def blobs(n: int = 300, d: int = 8, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs: features (n, d) float32 and labels (n,)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, size=(k, d))
    y = rng.integers(0, k, size=n)
    return (centers[y] + rng.normal(0, 1, size=(n, d))).astype(np.float32), y
