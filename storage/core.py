"""Core tables: runs, sources (versioned) and examples."""

from __future__ import annotations

DDL: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY,          -- '<flow>-<config hash>': a rerun of a config is the same run
        flow VARCHAR NOT NULL,
        name VARCHAR,
        config JSON NOT NULL,
        config_hash VARCHAR NOT NULL,
        code_version VARCHAR NOT NULL,
        status VARCHAR NOT NULL,             -- running | completed | failed
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        prefect_flow_run_id VARCHAR,
        summary JSON,
        error VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS sources (
        source_id INTEGER PRIMARY KEY,
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        uri VARCHAR,
        content_hash VARCHAR NOT NULL,
        n_rows BIGINT NOT NULL,
        n_train BIGINT NOT NULL,
        n_test BIGINT NOT NULL,
        n_features INTEGER,
        label_column VARCHAR,
        label_names VARCHAR[],
        image_shape INTEGER[],
        schema JSON NOT NULL,
        options JSON NOT NULL,
        parquet_path VARCHAR NOT NULL,
        ingested_at TIMESTAMP NOT NULL,
        UNIQUE (name, version),
        UNIQUE (name, content_hash)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS examples (
        example_id BIGINT PRIMARY KEY,       -- (source_id << 32) | row_index
        source_id INTEGER NOT NULL,
        row_index BIGINT NOT NULL,
        label INTEGER,                       -- code into sources.label_names
        split VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS run_sources (
        run_id VARCHAR NOT NULL,
        source_id INTEGER NOT NULL,
        PRIMARY KEY (run_id, source_id)
    )
    """,
    """
    CREATE OR REPLACE VIEW latest_sources AS
    SELECT * FROM sources s
    WHERE version = (SELECT max(version) FROM sources t WHERE t.name = s.name)
    """,
]
