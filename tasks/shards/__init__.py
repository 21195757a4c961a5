"""Sharded, out-of-core pruning: the map kernels (one shard in, partial results out) and reducers.

A source's rows are processed as shards (row ranges); no kernel here holds more than one shard.
The orchestration (one Prefect task per shard / pass / cluster group) is in :mod:`flows.sharded`,
the shard files and their DuckDB registration in :mod:`storage.shards`.

* :mod:`tasks.shards.plan` — row ranges;
* :mod:`tasks.shards.kmeans` — distributed spherical k-means (per-shard sums and counts, reduce);
* :mod:`tasks.shards.score` — final assignment, SSP scores, regrouping rows by cluster;
* :mod:`tasks.shards.dedup` — SemDeDup over a group of whole clusters;
* :mod:`tasks.shards.select` — exact global / per-group budgets from per-shard histograms.
"""
