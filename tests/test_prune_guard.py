"""``auto`` acts on the stage's own pruning curve: where its series loses beyond one seed std to another
measured policy of the same metric (or to random), the selection is remade with the best-measured
option and its reason carries the numbers; where it does not lose, nothing changes."""

from __future__ import annotations

import numpy as np

from configs.prune import PruneConfig
from tasks.prune.evaluate import CurvePoint, PruningCurve, auto_override, losses_to_random, mean_text
from tasks.prune.options import PruneOptions
from tasks.prune.registry import MetricScores, select_by_metric
from tasks.prune.stage import _act_on_curve, curve_fractions, prune_source
from tasks.prune.outcome import RankedSelection

from helpers import flipped_blobs


def _curve(means: dict[tuple[str, str, float], list[float]], resolved: str = "hard") -> PruningCurve:
    pts = [CurvePoint(m, p, resolved if p == "auto" else p, f, s, 10, acc, "")
           for (m, p, f), accs in means.items() for s, acc in enumerate(accs)]
    return PruningCurve(tuple(pts))


# auto loses at f=0.1 (0.909 vs ccs 0.925 / random 0.922, stds ~0.002), is level at f=0.5
LOSING = {("ssp", "auto", 0.1): [0.907, 0.909, 0.911], ("ssp", "ccs", 0.1): [0.923, 0.925, 0.927],
          ("random", "random", 0.1): [0.919, 0.922, 0.925], ("ssp", "auto", 0.5): [0.940, 0.942, 0.944],
          ("ssp", "ccs", 0.5): [0.939, 0.941, 0.943], ("random", "random", 0.5): [0.938, 0.941, 0.944],
          ("dbp", "auto", 0.1): [0.95, 0.95, 0.95]}  # another metric's policy is never a candidate


def test_auto_switches_to_the_best_measured_option_and_names_the_numbers():
    o = auto_override(_curve(LOSING), "ssp", 0.1)
    assert o is not None and (o.to_metric, o.to_policy, o.from_policy) == ("ssp", "ccs", "hard")
    assert abs(o.mean - 0.909) < 1e-9 and abs(o.to_mean - 0.925) < 1e-9 and o.n_seeds == 3
    r = o.reason()
    assert "switched from keep-hard" in r and "0.9090±0.0016" in r and "ssp/ccs 0.9250±0.0016" in r and "f=0.1" in r


def test_one_seed_messages_show_no_spread():
    """One seed has no std: the numbers say "(1 seed)" rather than a fake ±0.0000, and the margin says any loss counts."""
    one = {("ssp", "auto", 0.1): [0.909], ("ssp", "ccs", 0.1): [0.925], ("random", "random", 0.1): [0.920]}
    r = auto_override(_curve(one), "ssp", 0.1).reason()
    assert "±" not in r and "0.9090 (1 seed)" in r and "any loss counts" in r and "seed std" not in r
    (g,) = [g for g in losses_to_random(_curve(one)) if g.policy == "auto"]
    assert "±" not in g.line() and "0.9090 (1 seed) is below random 0.9200 (1 seed)" in g.line() and "beyond noise" not in g.line()
    assert mean_text(0.5, 0.01, 3) == "0.5000±0.0100"


def test_auto_unchanged_where_it_does_not_lose_beyond_noise():
    c = _curve(LOSING)
    assert auto_override(c, "ssp", 0.5) is None  # level with ccs and random
    assert auto_override(c, "ssp", 0.3) is None  # not measured there: the rule stands
    assert auto_override(c, "dbp", 0.1) is None  # no candidate beats it (and ssp's series are not dbp's)
    # a loss smaller than one seed std is noise, not evidence
    noisy = {("ssp", "auto", 0.1): [0.90, 0.92], ("random", "random", 0.1): [0.905, 0.925]}
    assert auto_override(_curve(noisy), "ssp", 0.1) is None


def test_auto_falls_back_to_random_when_random_is_the_best_measured():
    c = _curve({("semdedup", "auto", 0.1): [0.926, 0.928, 0.933], ("random", "random", 0.1): [0.941, 0.943, 0.945]},
               resolved="easy")
    o = auto_override(c, "semdedup", 0.1)
    assert o is not None and o.target == "random" and "switched from keep-easy" in o.reason()


def test_stage_remakes_the_selection_and_leaves_the_others():
    rng = np.random.default_rng(0)
    n = 400
    y = np.repeat(np.arange(4), n // 4)
    ms = MetricScores("ssp", rng.random(n).astype(np.float32))
    opts = PruneOptions.from_config(PruneConfig(metrics=["ssp"], fractions=[0.5, 0.1], semdedup_rel_eps=[]))
    sels = [RankedSelection("ssp", "auto", spec, select_by_metric(ms, "auto", options=opts.select, **b, dim=400,
                                                                    n_groups=4, seed=0))
            for spec, b in opts.budgets(n)]
    assert all(s.selection.resolved_policy == "easy" for s in sels)
    out = _act_on_curve(sels, _curve(LOSING, resolved="easy"), {"ssp": ms}, opts, y, 400, 4)
    by = {s.spec: s for s in out}
    assert by["f=0.5"].selection is sels[0].selection  # level at 0.5: untouched
    s = by["f=0.1"].selection
    ccs = select_by_metric(ms, "ccs", options=opts.select, fraction=0.1, seed=0)
    assert np.array_equal(s.indices, ccs.indices) and s.resolved_policy == "ccs" and s.policy == "auto"
    assert s.reason.startswith("auto -> ssp/ccs (switched from keep-easy") and "0.9250" in s.reason
    # random best -> class-balanced random: every class keeps its share
    rnd = {**LOSING, ("random", "random", 0.1): [0.95, 0.951, 0.952]}
    s = {x.spec: x for x in _act_on_curve(sels, _curve(rnd, resolved="easy"), {"ssp": ms}, opts, y, 400, 4)}["f=0.1"]
    assert s.selection.resolved_policy == "random" and "class-balanced random" in s.selection.reason
    assert np.bincount(y[s.selection.indices], minlength=4).tolist() == [10, 10, 10, 10]


def test_curve_covers_every_selected_fraction():
    assert curve_fractions((1.0, 0.5, 0.1), (0.9, 0.5, 0.3)) == (1.0, 0.9, 0.5, 0.3, 0.1)


def test_stage_end_to_end_switches_a_losing_auto():
    # distance to the class mean on 20 % flipped labels: auto's perceptron rule says keep-hard (abundant
    # data in 4 dims), which keeps the mislabelled rows; the curve measures that and auto switches
    E, y_noisy, flip, Et, yt = flipped_blobs()
    opts = PruneOptions.from_config(PruneConfig(
        metrics=["supervised_prototypes", "random"], policies=["auto"], fractions=[0.1], counts=[100],
        semdedup_rel_eps=[], evaluate={"fractions": [0.1], "seeds": [0, 1], "policies": ["auto", "easy"]}))
    res = prune_source(E, y_noisy, opts, n_classes=2, E_test=Et, y_test=yt)
    by = {(s.metric, s.spec): s.selection for s in res.selections if s.policy == "auto"}
    s = by[("supervised_prototypes", "f=0.1")]
    assert "switched from keep-hard" in s.reason and s.resolved_policy in ("easy", "random")
    assert flip[s.indices].mean() < 0.15  # no longer the mislabelled rows
    n100 = by[("supervised_prototypes", "n=100")]  # a count budget is not measured: the rule stands
    assert n100.resolved_policy == "hard" and "switched" not in n100.reason
    assert "GUARD" not in s.reason
    assert any("supervised_prototypes/auto at f=0.1" in line and "switched" in line for line in res.lines("s"))


def test_summary_never_calls_a_selection_that_loses_to_random_the_best():
    from flows.prune import _best_vs_random_lines

    c = _curve({("dbp", "auto", 0.5): [0.9612], ("random", "random", 0.5): [0.9622],
                ("ssp", "hard", 0.2): [0.95, 0.96], ("random", "random", 0.2): [0.90, 0.91]})
    at_half, at_fifth = _best_vs_random_lines("mnist", c)
    assert at_half == ("mnist: f=0.5 best random 0.9622 (1 seed); every pruned selection is at or below it "
                       "(best pruned dbp/auto 0.9612 (1 seed))")
    assert at_fifth == "mnist: f=0.2 best ssp/hard 0.9550±0.0050 vs random 0.9050"


def test_the_test_rows_never_choose_the_stored_selection():
    """auto's switch is decided on a validation split of the pool: the stored selections are the same
    whatever the test rows say (here their labels are scrambled), and the reason says what decided."""
    E, y_noisy, flip, Et, yt = flipped_blobs()
    opts = PruneOptions.from_config(PruneConfig(
        metrics=["supervised_prototypes", "random"], policies=["auto"], fractions=[0.1],
        semdedup_rel_eps=[], evaluate={"fractions": [0.1], "seeds": [0, 1], "policies": ["auto", "easy"]}))
    real = prune_source(E, y_noisy, opts, n_classes=2, E_test=Et, y_test=yt)
    scrambled = prune_source(E, y_noisy, opts, n_classes=2, E_test=Et, y_test=np.random.default_rng(5).permutation(yt))
    for a, b in zip(real.selections, scrambled.selections):
        assert (a.metric, a.spec) == (b.metric, b.spec) and np.array_equal(a.selection.indices, b.selection.indices)
        assert a.selection.reason.split("; GUARD")[0] == b.selection.reason.split("; GUARD")[0]
    s = next(x.selection for x in real.selections if x.metric == "supervised_prototypes")
    assert "switched from keep-hard by a validation curve" in s.reason and "test rows unused" in s.reason
    # the reported curve is still measured on the test rows
    assert real.curve.mean("supervised_prototypes", "auto", 0.1) != scrambled.curve.mean("supervised_prototypes", "auto", 0.1)


def test_validation_split_is_stratified_seeded_and_keeps_every_class_in_the_fit_part():
    from tasks.prune.evaluate import validation_split

    y = np.array([0] * 50 + [1] * 10 + [2] * 2 + [3])
    fit, held = validation_split(y, 0.2, seed=0)
    assert np.bincount(y[held], minlength=4).tolist() == [10, 2, 1, 0]
    assert np.intersect1d(fit, held).size == 0 and np.union1d(fit, held).size == y.size
    assert set(y[fit]) == {0, 1, 2, 3}
    assert np.array_equal(held, validation_split(y, 0.2, seed=0)[1])
    assert not np.array_equal(held, validation_split(y, 0.2, seed=1)[1])


def test_a_guard_note_on_auto_says_the_validation_split_decided_only_when_it_did():
    from tasks.prune.stage import _with_guard

    rng = np.random.default_rng(0)
    ms = MetricScores("ssp", rng.random(100).astype(np.float32))
    sel = RankedSelection("ssp", "auto", "f=0.1", select_by_metric(ms, "auto", fraction=0.1, dim=4, n_groups=2, seed=0))
    g = losses_to_random(_curve({("ssp", "auto", 0.1): [0.80, 0.81], ("random", "random", 0.1): [0.90, 0.91]}))
    assert g
    with_split = _with_guard([sel], g, decided=True)[0].selection.reason
    without = _with_guard([sel], g)[0].selection.reason
    assert "GUARD: the pruning curve on the test rows measured" in with_split and "which decides, showed no loss" in with_split
    assert "GUARD" in without and "validation split" not in without  # evaluate.validation: 0 decides nothing
