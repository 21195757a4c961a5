"""The schema's migrations, frozen as literal SQL per version (this module imports nothing).

A released version is never edited: a change to a table is a new version appended at the end
(``ALTER TABLE`` / ``CREATE TABLE``), so every existing file receives it when a writer opens it.
:mod:`storage.schema` applies them in order and records the version in ``winnow_meta``.
"""

MIGRATIONS: dict[int, tuple[str, ...]] = {
# v1: runs, sources, examples, embeddings, pruning, mixture and scaling tables
1: (
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
"""
CREATE TABLE IF NOT EXISTS embeddings (
    embedding_id VARCHAR PRIMARY KEY,    -- '<source_hash[:16]>-<encoder_hash>'
    source_id INTEGER NOT NULL,          -- the source version that first produced it
    source_hash VARCHAR NOT NULL,        -- sources.content_hash
    encoder_kind VARCHAR NOT NULL,       -- ssl_cnn | minilm | pca | column | raw
    encoder_hash VARCHAR NOT NULL,       -- EncoderConfig.hash(): only the fields that shape the vectors
    encoder_config JSON NOT NULL,        -- EncoderConfig.cache_json()
    dim INTEGER NOT NULL,
    n_rows BIGINT NOT NULL,
    parquet_path VARCHAR NOT NULL,       -- relative to the database folder
    weights_path VARCHAR,                -- fitted encoder state (.pt), NULL when nothing is fitted
    info JSON,                           -- seconds, training loss, explained variance, ...
    created_at TIMESTAMP NOT NULL,
    UNIQUE (source_hash, encoder_hash)
)
""",
"""
CREATE TABLE IF NOT EXISTS scores (
    run_id VARCHAR NOT NULL,
    source_id INTEGER NOT NULL,
    example_id BIGINT NOT NULL,
    metric VARCHAR NOT NULL,
    seed INTEGER NOT NULL,
    score DOUBLE NOT NULL,              -- higher = harder
    group_key INTEGER                   -- cluster (label-free metrics) or class (supervised)
)
""",
"""
CREATE TABLE IF NOT EXISTS selections (
    run_id VARCHAR NOT NULL,
    selection_id VARCHAR NOT NULL,      -- '<run_id>:<source>:<metric>:<policy>:<budget>'
    source_id INTEGER NOT NULL,
    source_name VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    policy VARCHAR NOT NULL,            -- as requested (hard | easy | auto | ccs | random)
    resolved_policy VARCHAR NOT NULL,   -- what ran (auto -> hard | easy)
    balance VARCHAR NOT NULL,
    fraction DOUBLE NOT NULL,           -- n_kept / n_pool
    budget_spec VARCHAR NOT NULL,       -- 'f=0.3' or 'n=1000'
    n_pool BIGINT NOT NULL,
    n_kept BIGINT NOT NULL,
    reason VARCHAR NOT NULL,            -- how the rows were chosen (auto: which branch and why)
    created_at TIMESTAMP NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS selection_members (
    run_id VARCHAR NOT NULL,
    selection_id VARCHAR NOT NULL,
    example_id BIGINT NOT NULL,
    source_id INTEGER NOT NULL,
    row_index BIGINT NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS pruning_curve (
    run_id VARCHAR NOT NULL,
    source_id INTEGER NOT NULL,
    metric VARCHAR NOT NULL,            -- 'full' for the all-rows probe
    policy VARCHAR NOT NULL,
    resolved_policy VARCHAR NOT NULL,
    fraction DOUBLE NOT NULL,
    seed INTEGER NOT NULL,
    n_kept BIGINT NOT NULL,
    accuracy DOUBLE NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS semdedup_report (
    run_id VARCHAR NOT NULL,
    source_id INTEGER NOT NULL,
    eps DOUBLE NOT NULL,
    n_pool BIGINT NOT NULL,
    n_removed BIGINT NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS perceptron_results (
    run_id VARCHAR NOT NULL,
    n_dim INTEGER NOT NULL,
    theta DOUBLE NOT NULL,
    alpha_tot DOUBLE NOT NULL,
    fraction DOUBLE NOT NULL,
    policy VARCHAR NOT NULL,
    seed INTEGER NOT NULL,
    n_train BIGINT NOT NULL,
    n_kept BIGINT NOT NULL,
    test_error DOUBLE NOT NULL
)
""",
"""
CREATE OR REPLACE VIEW latest_selection AS
WITH ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY source_id, metric, policy, budget_spec ORDER BY created_at DESC, selection_id
    ) AS rn
    FROM selections
)
SELECT r.selection_id, r.run_id, r.source_name, r.metric, r.policy, r.resolved_policy, r.fraction,
       m.example_id, m.source_id, m.row_index
FROM ranked r JOIN selection_members m ON m.run_id = r.run_id AND m.selection_id = r.selection_id
WHERE r.rn = 1
""",
"""
CREATE OR REPLACE VIEW pruning_curve_summary AS
SELECT run_id, source_id, metric, policy, fraction,
       string_agg(DISTINCT resolved_policy, ',') AS resolved_policy,
       avg(accuracy) AS mean_accuracy, coalesce(stddev_pop(accuracy), 0) AS std_accuracy,
       count(*) AS n_seeds, avg(n_kept) AS n_kept
FROM pruning_curve
GROUP BY run_id, source_id, metric, policy, fraction
""",
"""
CREATE OR REPLACE VIEW perceptron_summary AS
SELECT run_id, n_dim, theta, alpha_tot, fraction, policy,
       avg(test_error) AS mean_error, coalesce(stddev_pop(test_error), 0) AS std_error, count(*) AS n_seeds
FROM perceptron_results
GROUP BY run_id, n_dim, theta, alpha_tot, fraction, policy
""",
"""
CREATE TABLE IF NOT EXISTS mixture_pools (
    run_id VARCHAR NOT NULL,
    pool_index INTEGER NOT NULL,
    pool VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    n_rows BIGINT NOT NULL,
    class_counts JSON NOT NULL,          -- {label name: rows}
    PRIMARY KEY (run_id, pool_index)
)
""",
"""
CREATE TABLE IF NOT EXISTS ot_distances (
    run_id VARCHAR NOT NULL,
    sweep VARCHAR NOT NULL,              -- weighted | weighted-exact | resample ...
    mixture_id INTEGER NOT NULL,
    p DOUBLE[] NOT NULL,
    solver VARCHAR NOT NULL,
    reg DOUBLE NOT NULL,                 -- entropic epsilon (0 = exact)
    n INTEGER,                           -- examples per mixture (resample mode); NULL = weighted union
    value DOUBLE NOT NULL,
    grad DOUBLE[],                       -- dOT/dp_i (weighted mode), NULL in resample mode
    seconds DOUBLE NOT NULL,
    n_iter INTEGER NOT NULL,
    PRIMARY KEY (run_id, sweep, mixture_id)
)
""",
"""
CREATE TABLE IF NOT EXISTS ot_sweeps (
    run_id VARCHAR NOT NULL,
    sweep VARCHAR NOT NULL,
    solver VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,               -- kernel-float32 | kernel-float64 | log-... | emd | resample-nN
    reg DOUBLE NOT NULL,
    n_mixtures INTEGER NOT NULL,
    setup_seconds DOUBLE NOT NULL,
    total_seconds DOUBLE NOT NULL,
    PRIMARY KEY (run_id, sweep)
)
""",
"""
CREATE TABLE IF NOT EXISTS pilot_results (
    run_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,               -- pilot | target (real trainings at the target N)
    mixture_id INTEGER NOT NULL,         -- grid index; -1 = the selected mixture
    p DOUBLE[] NOT NULL,
    n INTEGER NOT NULL,
    rep INTEGER NOT NULL,
    seed UBIGINT NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE NOT NULL,
    seconds DOUBLE NOT NULL,
    PRIMARY KEY (run_id, kind, mixture_id, n, rep)
)
""",
"""
CREATE TABLE IF NOT EXISTS predictor_fits (
    run_id VARCHAR NOT NULL,
    n INTEGER NOT NULL,
    form VARCHAR NOT NULL,
    coefficients JSON NOT NULL,          -- {name: value}
    ridge DOUBLE NOT NULL,
    train_rmse DOUBLE NOT NULL,
    chosen BOOLEAN NOT NULL,             -- the form that validated best (the default predictor)
    PRIMARY KEY (run_id, n, form)
)
""",
"""
CREATE TABLE IF NOT EXISTS predictor_validation (
    run_id VARCHAR NOT NULL,
    n INTEGER NOT NULL,
    form VARCHAR NOT NULL,
    split VARCHAR NOT NULL,              -- projektor (p2 >= 0.5 held out) | random
    mae DOUBLE NOT NULL,
    rmse DOUBLE NOT NULL,
    r2 DOUBLE,
    n_train INTEGER NOT NULL,
    n_test INTEGER NOT NULL,
    PRIMARY KEY (run_id, n, form, split)
)
""",
"""
CREATE TABLE IF NOT EXISTS mixture_extrapolations (
    run_id VARCHAR NOT NULL,
    mixture_id INTEGER NOT NULL,
    p DOUBLE[] NOT NULL,
    n_target INTEGER NOT NULL,
    method VARCHAR NOT NULL,             -- power_law | log_n_map | naive_largest_pilot
    basis VARCHAR NOT NULL,              -- pilots (measured medians) | predictor (stage-1 predictions)
    predicted DOUBLE NOT NULL,
    measured DOUBLE,                     -- median accuracy of real trainings at n_target (NULL if none)
    PRIMARY KEY (run_id, mixture_id, method, basis)
)
""",
"""
CREATE TABLE IF NOT EXISTS mixture_selections (
    run_id VARCHAR PRIMARY KEY,
    p DOUBLE[] NOT NULL,
    n_target INTEGER NOT NULL,
    form VARCHAR NOT NULL,
    extrapolation VARCHAR NOT NULL,
    predicted DOUBLE NOT NULL,
    predicted_lo DOUBLE,
    predicted_hi DOUBLE,
    measured DOUBLE,                     -- real trainings of the chosen p at n_target
    best_grid_p DOUBLE[],
    best_grid_measured DOUBLE,
    regret DOUBLE,                       -- best_grid_measured - measured
    best_pilot_grid_p DOUBLE[],          -- best grid point by measured pilots at the largest N
    pilot_pick_regret DOUBLE,
    path JSON NOT NULL                   -- iterates of the winning start
)
""",
"""
CREATE OR REPLACE VIEW mixture_surface AS
SELECT r.run_id, r.n, r.mixture_id, r.p, median(r.value) AS accuracy, stddev_samp(r.value) AS accuracy_std,
       count(*) AS reps, any_value(o.value) AS ot
FROM pilot_results r
LEFT JOIN ot_distances o ON o.run_id = r.run_id AND o.mixture_id = r.mixture_id AND o.sweep = 'weighted'
WHERE r.kind = 'pilot'
GROUP BY r.run_id, r.n, r.mixture_id, r.p
""",
"""
CREATE TABLE IF NOT EXISTS fits (
    run_id VARCHAR NOT NULL,
    fit_key VARCHAR NOT NULL,            -- what was fitted: a mixture name, or the CSV's y column
    form VARCHAR NOT NULL,
    formula VARCHAR NOT NULL,
    x_col VARCHAR NOT NULL,
    x2_col VARCHAR,
    y_col VARCHAR NOT NULL,
    space VARCHAR NOT NULL,              -- 'error' (1 - accuracy), 'loss' or 'as given'
    n_points INTEGER NOT NULL,
    n_groups INTEGER NOT NULL,
    n_starts INTEGER NOT NULL,
    loss DOUBLE NOT NULL,                -- summed Huber loss on log residuals at the optimum
    stable BOOLEAN NOT NULL,
    warning VARCHAR,
    params JSON NOT NULL,                -- {name: value}
    param_ci JSON NOT NULL,              -- {name: [lo, hi]} run-bootstrap percentile (approximate)
    bootstrap INTEGER NOT NULL,
    level DOUBLE NOT NULL,
    holdout_largest INTEGER NOT NULL,
    holdout_are DOUBLE,
    holdout_rmsle DOUBLE,
    baseline_are JSON,                   -- {last_value: .., best_small: ..} on the same held-out points
    beats_baseline BOOLEAN,
    selection VARCHAR,                   -- form 'auto': why this form
    plot_path VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, fit_key)
)
""",
"""
CREATE TABLE IF NOT EXISTS predictions (
    run_id VARCHAR NOT NULL,
    fit_key VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,               -- 'target' (requested size) or 'holdout' (validation point)
    x DOUBLE NOT NULL,
    x2 DOUBLE,
    y_pred DOUBLE,
    y_lo DOUBLE,
    y_hi DOUBLE,
    y_obs DOUBLE,
    level DOUBLE
)
""",
),
# v2: the joint planner's tables
2: (
"""
CREATE TABLE IF NOT EXISTS plan_runs (
    run_id VARCHAR PRIMARY KEY,
    target_n BIGINT NOT NULL,
    budget DOUBLE,                       -- total cost allowed (NULL = none)
    pools VARCHAR[] NOT NULL,
    predictor_form VARCHAR NOT NULL,     -- screening predictor chosen by held-out error
    predictor_mae DOUBLE NOT NULL,       -- its held-out MAE (accuracy units, mean over pilot sizes)
    predicted DOUBLE NOT NULL,           -- plan's accuracy at N (scaling law on its pilots)
    lo DOUBLE NOT NULL,
    hi DOUBLE NOT NULL,
    level DOUBLE NOT NULL,               -- coverage of [lo, hi]
    measured DOUBLE,                     -- median accuracy of trainings at N (validation mode)
    n_enumerated BIGINT NOT NULL,
    n_candidates BIGINT NOT NULL,        -- feasible and distinct
    rejected JSON NOT NULL,              -- candidates dropped per constraint
    settings JSON NOT NULL,
    seconds JSON NOT NULL,
    created_at TIMESTAMP NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS plan_sources (
    run_id VARCHAR NOT NULL,
    pool_index INTEGER NOT NULL,
    pool VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    policy VARCHAR NOT NULL,             -- none | metric:keep:balance
    keep_fraction DOUBLE NOT NULL,
    n_pool BIGINT NOT NULL,
    n_available BIGINT NOT NULL,         -- rows left after pruning
    n_taken BIGINT NOT NULL,             -- rows the plan takes (sum over pools = N)
    p DOUBLE NOT NULL,
    cost_per_example DOUBLE NOT NULL,
    PRIMARY KEY (run_id, pool_index)
)
""",
"""
CREATE TABLE IF NOT EXISTS plan_options (
    run_id VARCHAR NOT NULL,
    pool_index INTEGER NOT NULL,
    option_index INTEGER NOT NULL,       -- 0 = no pruning
    label VARCHAR NOT NULL,
    policy VARCHAR NOT NULL,
    keep_fraction DOUBLE NOT NULL,
    n_kept BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    PRIMARY KEY (run_id, pool_index, option_index)
)
""",
"""
CREATE TABLE IF NOT EXISTS plan_candidates (
    run_id VARCHAR NOT NULL,
    candidate_id INTEGER NOT NULL,
    options INTEGER[] NOT NULL,          -- option_index per pool
    p DOUBLE[] NOT NULL,
    counts BIGINT[] NOT NULL,            -- rows taken per pool at N
    ot DOUBLE NOT NULL,                  -- OT of the pruned mixture to the target
    screen DOUBLE NOT NULL,              -- predicted accuracy at N (predictor + power law)
    design BOOLEAN NOT NULL,             -- piloted to fit the predictor
    PRIMARY KEY (run_id, candidate_id)
)
""",
"""
CREATE TABLE IF NOT EXISTS plan_trials (
    run_id VARCHAR NOT NULL,
    key VARCHAR NOT NULL,                -- c<candidate_id> | b:<baseline>
    stage VARCHAR NOT NULL,              -- design | confirm | validate
    n BIGINT NOT NULL,
    rep INTEGER NOT NULL,
    seed UBIGINT NOT NULL,
    accuracy DOUBLE NOT NULL,
    seconds DOUBLE NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS plan_alternatives (
    run_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,               -- finalist-k | best_mixture_unpruned | uniform_random_pruning | alone:<pool>
    role VARCHAR NOT NULL,               -- plan | finalist | baseline
    key VARCHAR NOT NULL,
    options VARCHAR[] NOT NULL,          -- option label per pool
    p DOUBLE[] NOT NULL,
    counts BIGINT[] NOT NULL,
    n_taken BIGINT NOT NULL,
    ot DOUBLE NOT NULL,
    screen DOUBLE NOT NULL,
    predicted DOUBLE NOT NULL,
    lo DOUBLE NOT NULL,                  -- reported interval (calibrated or bootstrap, see plan_runs.settings)
    hi DOUBLE NOT NULL,
    boot_lo DOUBLE,                      -- the scaling fit's bootstrap interval alone
    boot_hi DOUBLE,
    measured DOUBLE,
    measured_std DOUBLE,
    n_measured INTEGER NOT NULL,
    contained BOOLEAN,                   -- lo <= measured <= hi (NULL without validation)
    note VARCHAR NOT NULL,
    PRIMARY KEY (run_id, name)
)
""",
"""
CREATE TABLE IF NOT EXISTS plan_members (
    run_id VARCHAR NOT NULL,
    example_id BIGINT NOT NULL,
    source_id INTEGER NOT NULL,
    row_index BIGINT NOT NULL,
    pool VARCHAR NOT NULL,
    PRIMARY KEY (run_id, example_id)
)
""",
"""
CREATE TABLE IF NOT EXISTS plan_predictor_validation (
    run_id VARCHAR NOT NULL,
    form VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    mae DOUBLE NOT NULL,
    rmse DOUBLE NOT NULL,
    r2 DOUBLE,
    chosen BOOLEAN NOT NULL
)
""",
"""
CREATE OR REPLACE VIEW plan_report AS
SELECT a.run_id, r.target_n, a.role, a.name, a.options, a.p, a.n_taken, a.predicted, a.lo, a.hi, a.measured,
       a.measured_std, a.contained, a.boot_lo, a.boot_hi,
       CASE WHEN a.measured IS NULL THEN NULL ELSE a.measured BETWEEN a.boot_lo AND a.boot_hi END AS boot_contained,
       a.screen, a.ot, a.note
FROM plan_alternatives a JOIN plan_runs r USING (run_id)
""",
),
# v3: scaling fits' details (issues 19/20): the predictor used, both fits, per-form table, warnings, source SQL
3: (
"""
CREATE TABLE IF NOT EXISTS fit_details (
    run_id VARCHAR NOT NULL,
    fit_key VARCHAR NOT NULL,
    predictor VARCHAR NOT NULL,          -- what the predictions come from: the form, or 'last_value' / 'best_small'
    curve JSON,                          -- --by: {column: value} of this curve
    source_sql VARCHAR,                  -- the read-only SELECT the fitted rows came from (--where/--col/--sql)
    x3_col VARCHAR,                      -- unique-data column (data-constrained forms; x2_col is tokens seen)
    validated_params JSON,               -- the validated fit (training points only) {name: value}
    validated_n_train INTEGER,
    baseline_rmsle JSON,                 -- {last_value: .., best_small: ..} on the held-out points
    candidates JSON,                     -- auto: [[predictor, rmsle, are, note], ...] best first
    interval_method VARCHAR,             -- what the prediction intervals cover
    warnings JSON,                       -- every warning, as a list
    notes JSON,
    targets JSON,                        -- prediction points [[N, D, U], ...] when they have a third variable
    PRIMARY KEY (run_id, fit_key)
)
""",
),
# v4: run history (issue 15): every attempt of a run is a row, with its lease, error and source versions
4: (
"""
CREATE TABLE IF NOT EXISTS run_attempts (
    attempt_id VARCHAR PRIMARY KEY,      -- random; also names the attempt's lease file
    run_id VARCHAR NOT NULL,             -- runs.run_id ('<flow>-<config hash>'): the results it writes
    attempt INTEGER NOT NULL,            -- 1, 2, ... per run_id
    flow VARCHAR NOT NULL,
    name VARCHAR,
    status VARCHAR NOT NULL,             -- running | completed | failed | crashed
    prefect_flow_run_id VARCHAR,
    code_version VARCHAR NOT NULL,
    host VARCHAR,
    pid INTEGER,
    lease_seconds DOUBLE NOT NULL,       -- running + no heartbeat for this long = crashed
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    error VARCHAR,
    source_ids INTEGER[],                -- the source versions this attempt read (its run_sources)
    sources JSON                         -- [{"name", "version", "source_id"}] for people
)
""",
"""
INSERT INTO run_attempts
SELECT run_id || '@1', run_id, 1, flow, name,
       CASE WHEN status = 'running' THEN 'crashed' ELSE status END,
       prefect_flow_run_id, code_version, NULL, NULL, 0, started_at, finished_at,
       CASE WHEN status = 'running' THEN 'found running when run history was introduced' ELSE error END,
       (SELECT list(source_id ORDER BY source_id) FROM run_sources rs WHERE rs.run_id = runs.run_id),
       NULL
FROM runs
WHERE run_id || '@1' NOT IN (SELECT attempt_id FROM run_attempts)
""",
),
# v5: the sharded path (issue 18): shard files registered per set, sharded runs, selections,
# members and SemDeDup removals (ids, not just counts)
5: (
"""
CREATE TABLE IF NOT EXISTS shard_files (
    set_id VARCHAR NOT NULL,             -- a shard set: one source's vectors, or one run's scores
    kind VARCHAR NOT NULL,               -- vectors | scores
    shard INTEGER NOT NULL,
    row_start BIGINT NOT NULL,
    row_stop BIGINT NOT NULL,
    content_hash VARCHAR NOT NULL,
    parquet_path VARCHAR NOT NULL,       -- relative to the database folder
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (set_id, kind, shard)
)
""",
"""
CREATE TABLE IF NOT EXISTS sharded_runs (
    run_id VARCHAR PRIMARY KEY,
    set_id VARCHAR NOT NULL,             -- the vectors' shard set
    n_rows BIGINT NOT NULL,
    dim INTEGER NOT NULL,
    n_shards INTEGER NOT NULL,
    k INTEGER NOT NULL,
    n_iter INTEGER NOT NULL,
    converged BOOLEAN NOT NULL,
    objective DOUBLE NOT NULL,           -- mean cosine to the assigned centroid
    centroids_path VARCHAR NOT NULL,
    settings JSON NOT NULL,
    timings JSON NOT NULL,               -- seconds per phase
    created_at TIMESTAMP NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS sharded_selections (
    run_id VARCHAR NOT NULL,
    selection_id VARCHAR NOT NULL,       -- '<run_id>:ssp:<policy>:f=<fraction>'
    metric VARCHAR NOT NULL,
    policy VARCHAR NOT NULL,
    resolved_policy VARCHAR NOT NULL,
    balance VARCHAR NOT NULL,
    fraction DOUBLE NOT NULL,
    n_pool BIGINT NOT NULL,
    n_kept BIGINT NOT NULL,
    histogram_passes INTEGER NOT NULL,   -- radix passes over the per-shard histograms
    reason VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, selection_id)
)
""",
"""
CREATE TABLE IF NOT EXISTS sharded_members (
    run_id VARCHAR NOT NULL,
    selection_id VARCHAR NOT NULL,
    row_index BIGINT NOT NULL
)
""",
"""
CREATE TABLE IF NOT EXISTS sharded_dedup (
    run_id VARCHAR NOT NULL,
    eps DOUBLE NOT NULL,
    n_pool BIGINT NOT NULL,
    n_removed BIGINT NOT NULL,
    PRIMARY KEY (run_id, eps)
)
""",
"""
CREATE TABLE IF NOT EXISTS sharded_dedup_removed (
    run_id VARCHAR NOT NULL,
    eps DOUBLE NOT NULL,
    row_index BIGINT NOT NULL,
    cluster INTEGER NOT NULL
)
""",
),
}
