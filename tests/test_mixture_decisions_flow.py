"""End to end through the CLI: safe selection in ``winnow mixture`` and ``winnow plan`` on settings
they were not tuned on.

* A synthetic setting whose best mixture is a vertex (a clean pool; a pool with systematically wrong
  labels; a pool from another domain): both stages choose the clean pool alone.
* A non-converging ε: the sweep still finishes, and ot_distances says per mixture which ε was used
  and how many iterations it ran.
* A text source embedded by MiniLM enters mixture and plan with no manual export (slow), and a
  text source without an encoder is refused before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from helpers import write_yaml


def _vertex_data(d: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.6, (4, 8))

    def blobs(n: int, shift: float = 0.0, noise: float = 1.0):
        y = rng.integers(0, 4, n)
        return (means[y] + rng.normal(0, 2.2 * noise, (n, 8)) + shift).astype(np.float32), y

    X, y = blobs(1200)
    np.savez(d / "clean.npz", X=X, y=y)
    X, y = blobs(600)
    np.savez(d / "wrong.npz", X=X, y=(y + 1) % 4)  # every label shifted: any share of this pool hurts
    X, y = blobs(600, shift=1.5, noise=1.6)
    y[y == 0] = 1
    np.savez(d / "other.npz", X=X, y=y)


VERTEX = """
name: vertex
sources:
  - {{name: clean, kind: npz, path: {d}/clean.npz, test_fraction: 0.3}}
  - {{name: wrong, kind: npz, path: {d}/wrong.npz, test_fraction: 0.05}}
  - {{name: other, kind: npz, path: {d}/other.npz, test_fraction: 0.05}}
mixture:
  pools:
    - {{name: clean, source: clean}}
    - {{name: wrong, source: wrong}}
    - {{name: other, source: other}}
  target: {{source: clean, split: test, n_ot: 150, n_eval: 200}}
  features: {{image_size: null, dim: 0}}
  ot: {{reveal: 150{ot}}}
  grid_step: 0.25
  pilot_sizes: [40, 80, 160]
  reps: 2
  predictor: {{random_splits: 3}}
  extrapolation: {{target_n: 300, n_validate: 4, reps: 2}}
  select: {{steps: 6}}
  plots: false
plan:
  target_n: 300
  policies: ["ssp:hard", "random:equal"]
  fractions: [0.5]
  grid_step: 0.5
  reveal: 120
  metric_k: 4
  pilot_sizes: [40, 80, 160]
  design: 6
  reps: 1
  finalists: 2
  confirm_reps: 2
  bootstrap: 50
  validation: {{enabled: true, reps: 2}}
"""


def _rows(db: Path, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_mixture_and_plan_both_choose_the_vertex_that_is_best(tmp_path, db_path, winnow):
    _vertex_data(tmp_path)
    cfg = write_yaml(tmp_path / "vertex.yaml", VERTEX.format(d=tmp_path, ot=""))
    code, out, err = winnow("mixture", cfg, "--db", db_path, "--json")
    assert code == 0, err
    (p, lo, hi, pred, measured) = _rows(db_path, "SELECT p, predicted_lo, predicted_hi, predicted, measured FROM mixture_selections")[0]
    assert p == [1.0, 0.0, 0.0]
    assert 0 <= lo <= pred <= hi <= 1 and 0 <= measured <= 1
    kinds = dict(_rows(db_path, "SELECT kind, count(*) FROM pilot_results GROUP BY kind"))
    assert kinds["rank"] >= 2 * 5 and kinds["confirm"] == 3 and kinds["target"] > 0  # finalists: vertices, uniform, pilots
    # the confirm draws are not the rank draws: fresh seeds
    rank_seeds = {s for (s,) in _rows(db_path, "SELECT seed FROM pilot_results WHERE kind = 'rank'")}
    conf_seeds = {s for (s,) in _rows(db_path, "SELECT seed FROM pilot_results WHERE kind = 'confirm'")}
    assert not rank_seeds & conf_seeds

    code, out, err = winnow("plan", cfg, "--db", db_path, "--json")
    assert code == 0, err
    (pp,) = _rows(db_path, "SELECT p FROM plan_alternatives WHERE role = 'plan'")[0]
    assert pp == [1.0, 0.0, 0.0]
    for lo, hi, pred in _rows(db_path, "SELECT lo, hi, predicted FROM plan_alternatives"):
        assert 0 <= lo <= hi <= 1 and 0 <= pred <= 1
    assert "interval coverage" in out


def test_a_stalling_epsilon_is_detected_per_mixture_and_the_stage_finishes(tmp_path, db_path, winnow):
    _vertex_data(tmp_path)
    cfg = write_yaml(tmp_path / "stall.yaml",
                     VERTEX.format(d=tmp_path, ot=", reg: 0.002, tol: 0.00001, max_iter: 15").split("plan:")[0])
    code, out, err = winnow("mixture", cfg, "--db", db_path)
    assert code == 0, err
    rows = _rows(db_path, "SELECT reg, n_iter, seconds FROM ot_distances WHERE sweep = 'weighted'")
    assert len(rows) == 15
    assert all(r[0] > 0.002 for r in rows)  # every mixture stalled at 0.002 and was solved again at a larger ε
    assert all(r[2] > 0 for r in rows) and all(r[1] > 0 for r in rows)
    assert len({r[0] for r in rows}) == 1  # one ε for every mixture: the values are one quantity
    assert "every mixture solved at ε=" in out
    assert _rows(db_path, "SELECT count(*) FROM mixture_selections")[0][0] == 1


TOPICS = {
    "sport": "match goal team player coach league season score win cup striker referee",
    "tech": "software computer chip internet phone network data device code app robot",
    "money": "bank market shares profit economy price inflation trade investor tax loan",
}


def _text_data(path: Path, n_per_topic: int = 120, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for topic, words in TOPICS.items():
            vocab = words.split()
            for _ in range(n_per_topic):
                text = " ".join(rng.choice(vocab, size=8)) + " " + " ".join(rng.choice("the a of and to in".split(), size=4))
                f.write(json.dumps({"text": text, "label": topic}) + "\n")


TEXT = """
name: text-mixture
sources:
  - {{name: news, kind: jsonl, path: {p}, text: text, label: label, test_fraction: 0.35}}
{encoder}mixture:
  pools:
    - {{name: games, source: news, n: 80, class_proportions: {{sport: 0.8, tech: 0.1, money: 0.1}}, seed: 1}}
    - {{name: gadgets, source: news, n: 80, class_proportions: {{tech: 0.8, sport: 0.1, money: 0.1}}, seed: 2}}
    - {{name: finance, source: news, n: 80, class_proportions: {{money: 0.8, sport: 0.1, tech: 0.1}}, seed: 3}}
  target: {{source: news, split: test, n_ot: 40, n_eval: 70}}
  features: {{dim: 16}}
  ot: {{reveal: 60}}
  grid_step: 0.5
  pilot_sizes: [20, 40]
  reps: 1
  predictor: {{random_splits: 2}}
  extrapolation: {{target_n: 60, n_validate: 2, reps: 2}}
  select: {{steps: 3}}
  plots: false
plan:
  target_n: 60
  policies: ["random:equal"]
  fractions: [0.5]
  grid_step: 0.5
  reveal: 40
  metric_k: 3
  pilot_sizes: [15, 30, 45]
  design: 2
  reps: 1
  finalists: 1
  confirm_reps: 2
  bootstrap: 50
  validation: {{enabled: true, reps: 1}}
"""


def test_a_text_source_without_an_encoder_is_refused_before_anything_is_written(tmp_path, db_path, winnow):
    _text_data(tmp_path / "news.jsonl")
    cfg = write_yaml(tmp_path / "t.yaml", TEXT.format(p=tmp_path / "news.jsonl", encoder=""))
    code, out, err = winnow("mixture", cfg, "--db", db_path)
    assert code == 2 and "encoder" in err and len(err.strip().splitlines()) == 1
    assert not db_path.exists()  # refused when the config loads: not even the database file is made


@pytest.mark.slow
def test_mixture_and_plan_run_on_a_text_source_embedded_by_minilm(tmp_path, db_path, winnow):
    _text_data(tmp_path / "news.jsonl")
    enc = "encoder: {kind: minilm, max_seq_length: 32}\n"
    cfg = write_yaml(tmp_path / "t.yaml", TEXT.format(p=tmp_path / "news.jsonl", encoder=enc))
    code, out, err = winnow("mixture", cfg, "--db", db_path)
    assert code == 0, err
    (p, measured) = _rows(db_path, "SELECT p, measured FROM mixture_selections")[0]
    assert abs(sum(p) - 1) < 1e-9 and measured > 0.5  # three topics: far above chance on MiniLM vectors
    code, out, err = winnow("plan", cfg, "--db", db_path)
    assert code == 0, err
    assert _rows(db_path, "SELECT count(*) FROM plan_members")[0][0] > 0
    assert _rows(db_path, "SELECT count(*) FROM embeddings WHERE encoder_kind = 'minilm'")[0][0] == 1  # embedded once, cached
