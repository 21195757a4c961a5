"""Selection policies, budgets, group balance and the ``auto`` rule."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.prune.select import AUTO_ALPHA_THRESHOLD, allocate_quotas, auto_policy, resolve_budget, select

SCORES = np.arange(20, dtype=np.float64)  # row i has score i: hardest = 19
GROUPS = np.repeat([0, 1], [15, 5])


def test_budget_as_fraction_or_count():
    assert resolve_budget(20, fraction=0.25) == 5
    assert resolve_budget(20, fraction=1.0) == 20
    assert resolve_budget(20, fraction=0.001) == 1  # at least one row
    assert resolve_budget(20, count=7) == 7
    for kw, match in [({"fraction": 0.0}, "fraction=0.0 must be in \\(0, 1\\]"),
                      ({"fraction": 1.5}, "fraction=1.5 must be in \\(0, 1\\]"),
                      ({"fraction": float("nan")}, "fraction=nan"),
                      ({"count": 0}, "count=0 must be in \\[1, n=20\\]"),
                      ({"count": 21}, "count=21"),
                      ({}, "exactly one"),
                      ({"fraction": 0.5, "count": 3}, "exactly one")]:
        with pytest.raises(ValueError, match=match):
            resolve_budget(20, **kw)


def test_keep_hard_easy_random_policies():
    hard = select(SCORES, count=3, policy="hard")
    easy = select(SCORES, count=3, policy="easy")
    assert hard.indices.tolist() == [17, 18, 19] and hard.resolved_policy == "hard"
    assert easy.indices.tolist() == [0, 1, 2] and easy.resolved_policy == "easy"
    r1 = select(SCORES, fraction=0.5, policy="random", seed=1)
    r2 = select(SCORES, fraction=0.5, policy="random", seed=1)
    r3 = select(SCORES, fraction=0.5, policy="random", seed=2)
    assert np.array_equal(r1.indices, r2.indices) and not np.array_equal(r1.indices, r3.indices)
    assert r1.indices.size == 10 and len(set(r1.indices)) == 10


def test_ccs_policy_wraps_any_score():
    s = np.random.default_rng(0).random(1000)
    sel = select(s, fraction=0.1, policy="ccs", ccs_beta=0.2, ccs_strata=10, seed=0)
    assert sel.budget == 100 and sel.resolved_policy == "ccs" and "dropped the 200 hardest" in sel.reason
    assert s[sel.indices].max() <= np.sort(s)[-201]
    with pytest.raises(ValueError, match="ccs"):
        select(s, fraction=0.1, policy="ccs", groups=np.zeros(1000, int), balance="proportional")
    assert "is keep-easy" not in sel.reason


def test_ccs_says_when_its_hard_cut_leaves_nothing_to_sample():
    """At f >= 1 - beta the hard cut removes every row to drop: the selection is keep-easy and says so."""
    s = np.random.default_rng(0).random(1000)
    sel = select(s, fraction=0.9, policy="ccs", ccs_beta=0.1, seed=0)
    easy = select(s, fraction=0.9, policy="easy", seed=0)
    assert np.array_equal(np.sort(sel.indices), np.sort(easy.indices))
    assert "at this budget ccs is keep-easy" in sel.reason and "a smaller ccs_beta" in sel.reason


def test_auto_rule_branches_and_reason():
    easy = auto_policy(budget=100, n_groups=10, dim=32)  # alpha = 0.31
    hard = auto_policy(budget=1000, n_groups=10, dim=32)  # alpha = 3.1
    assert easy.policy == "easy" and hard.policy == "hard"
    assert "alpha = kept/(groups*dim) = 100/(10*32) = 0.312 < threshold 3" in easy.reason
    assert ">= threshold" in hard.reason and "abundant" in hard.reason
    edge = auto_policy(budget=int(AUTO_ALPHA_THRESHOLD * 20), n_groups=2, dim=10)
    assert edge.policy == "hard"  # alpha == threshold -> hard
    assert auto_policy(100, 10, 32, threshold=0.1).policy == "hard"
    with pytest.raises(ValueError, match="threshold"):
        auto_policy(100, 10, 32, threshold=0)


def test_auto_policy_in_select_records_branch():
    s = np.random.default_rng(0).random(600)
    lo = select(s, fraction=0.05, policy="auto", dim=4, n_groups=3)  # 30/(3*4) = 2.5 -> easy
    hi = select(s, fraction=0.5, policy="auto", dim=4, n_groups=3)  # 300/12 = 25 -> hard
    assert lo.policy == "auto" and lo.resolved_policy == "easy" and lo.indices.tolist() == sorted(np.argsort(s)[:30].tolist())
    assert hi.resolved_policy == "hard" and set(hi.indices) == set(np.argsort(-s)[:300])
    assert "keep-easy" in lo.reason and "keep-hard" in hi.reason
    with pytest.raises(ValueError, match="dim"):
        select(s, fraction=0.5, policy="auto")


def test_balance_modes():
    # proportional: each group keeps the same fraction
    p = select(SCORES, count=8, policy="hard", groups=GROUPS, balance="proportional")
    assert p.quotas.tolist() == [6, 2] and p.indices.tolist() == [9, 10, 11, 12, 13, 14, 18, 19]
    # equal: same count per group
    e = select(SCORES, count=8, policy="easy", groups=GROUPS, balance="equal")
    assert e.quotas.tolist() == [4, 4] and e.indices.tolist() == [0, 1, 2, 3, 15, 16, 17, 18]
    # equal with a cap: the small group gives its excess to the other
    e2 = select(SCORES, count=14, policy="hard", groups=GROUPS, balance="equal")
    assert e2.quotas.tolist() == [9, 5]
    # none + min share: global top-4 would all be group 1; the share forces >= 1 from group 0
    m = select(SCORES, count=4, policy="hard", groups=GROUPS, min_group_share=0.5)
    assert m.indices.tolist() == [14, 17, 18, 19] and m.quotas.tolist() == [1, 3]
    # an empty group id (a k-means cluster left empty) takes no share: two groups with ids 0 and 5
    g5 = np.where(GROUPS == 1, 5, 0)
    m5 = select(SCORES, count=4, policy="hard", groups=g5, min_group_share=1.0)
    assert np.bincount(g5[m5.indices]).tolist()[::5] == [2, 2] and ">= 2 per group" in m5.reason
    assert "over 2 groups" in select(SCORES, count=4, policy="hard", groups=g5, balance="equal").reason
    with pytest.raises(ValueError, match="group ids"):
        select(SCORES, count=4, balance="equal")
    with pytest.raises(ValueError, match="group_weights"):
        select(SCORES, count=4, groups=GROUPS, balance="weighted")
    with pytest.raises(ValueError, match="balance='magic'"):
        select(SCORES, count=4, groups=GROUPS, balance="magic")


def test_allocate_quotas_caps_redistributes_and_sums_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        G = rng.integers(1, 8)
        caps = rng.integers(0, 30, size=G)
        if caps.sum() == 0:
            continue
        w = rng.random(G) * (rng.random(G) > 0.2)
        b = int(rng.integers(1, caps.sum() + 1))
        q = allocate_quotas(w, caps, b)
        assert q.sum() == b and np.all(q <= caps) and np.all(q >= 0)
    assert allocate_quotas(np.array([1.0, 1.0, 1.0]), np.array([1, 10, 10]), 10).tolist() in ([1, 5, 4], [1, 4, 5])
    assert allocate_quotas(np.array([1.0, 0.0]), np.array([2, 5]), 4).tolist() == [2, 2]  # zero weight fills last
    with pytest.raises(ValueError, match="exceeds"):
        allocate_quotas(np.ones(2), np.array([1, 1]), 3)


def test_select_rejects_bad_scores_and_policy():
    with pytest.raises(ValueError, match="non-finite value nan at row 1"):
        select(np.array([0.0, np.nan]), count=1)
    with pytest.raises(ValueError, match="policy='hardest'"):
        select(SCORES, count=1, policy="hardest")
    with pytest.raises(ValueError, match="fraction=1.2"):
        select(SCORES, fraction=1.2)


def test_ties_are_broken_at_random_not_by_row_order():
    # a coarse score (5 distinct values, like forgetting counts) on rows stored sorted by class:
    # breaking ties by row order would keep the first classes and drop the last ones
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 200)
    coarse = rng.integers(0, 5, size=y.size).astype(np.float64)
    for policy in ("hard", "easy"):
        sel = select(coarse, fraction=0.1, policy=policy, seed=0)
        kept = np.bincount(y[sel.indices], minlength=5)
        assert kept.min() >= 8, (policy, kept.tolist())  # ~20 per class expected, all classes present
        # the score order is still honoured: only the boundary value is sampled
        s = coarse[sel.indices]
        rest = np.delete(coarse, sel.indices)
        assert (s.min() >= rest.max()) if policy == "hard" else (s.max() <= rest.min())
    # the tie order is seeded: same seed same rows, another seed other rows
    a, b, c = (select(coarse, fraction=0.1, policy="hard", seed=s).indices for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # within groups (balance) and in CCS's dropped hard tail too
    g = np.repeat(np.arange(2), 500)
    p = select(coarse, fraction=0.1, policy="hard", groups=g, balance="proportional", seed=0)
    assert np.bincount(y[p.indices], minlength=5).min() >= 8
    flat = np.zeros(1000)
    cc = select(flat, fraction=0.5, policy="ccs", ccs_beta=0.3, seed=0)
    assert np.bincount(y[cc.indices], minlength=5).min() >= 70


def test_effective_dim_counts_the_directions_the_data_varies_in():
    from tasks.prune.select import effective_dim

    rng = np.random.default_rng(0)
    iso = rng.normal(size=(4000, 50))
    assert 45 <= effective_dim(iso) <= 50  # isotropic: the nominal width (the perceptron's N)
    low = rng.normal(size=(4000, 4)) @ rng.normal(size=(4, 128)) + 1e-3 * rng.normal(size=(4000, 128))
    assert effective_dim(low) <= 4  # 128 nominal dims, 4 that vary
    # the auto rule reads it: 400 kept rows / (2 groups x ~4 dims) is abundant -> keep-hard,
    # while the nominal width would call it scarce (400 / (2 x 128) = 1.6 < 3)
    from tasks.prune.select import auto_policy

    assert auto_policy(400, 2, effective_dim(low)).policy == "hard"
    assert auto_policy(400, 2, 128).policy == "easy"
