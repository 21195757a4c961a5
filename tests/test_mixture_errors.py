"""Bad inputs to mixture estimation give one clear error (a WinnowError where the user can cause it, a
ValueError for a kernel's broken precondition), and a failed run writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import WinnowError
from tasks.mixture.features import align_features
from tasks.mixture.pools import prepare_mixture_data
from tasks.mixture.weighted import WeightedOT, build_union_problem

from helpers import mixture_config as _cfg
from helpers import mixture_source as _source
from helpers import mixture_sources as _sources


def test_valid_inputs_prepare_aligned_pools_in_the_target_label_space():
    data = prepare_mixture_data(_sources(B=_source(2, "B", 200, ["2", "0"], seed=1)), _cfg())
    assert data.pool_sizes.tolist() == [60, 60] and data.dim == 8
    # B's label "2" (code 0 there) is the target's code 2
    assert set(np.unique(data.pools_y[1])) <= {0, 2}


def test_pool_labels_missing_from_the_target_are_refused_by_name():
    with pytest.raises(WinnowError, match=r"labels \['7', '8'\] that the target"):
        prepare_mixture_data(_sources(B=_source(2, "B", 200, ["7", "8"], seed=1)), _cfg())


def test_unlabelled_or_empty_sources_are_refused():
    from dataclasses import replace

    unl = replace(_source(2, "B", 200, ["0"]), y=None, label_names=None)
    with pytest.raises(WinnowError, match="no labels"):
        prepare_mixture_data(_sources(B=unl), _cfg())
    empty = _source(2, "B", 0, ["0", "1", "2"])
    with pytest.raises(WinnowError, match="empty"):
        prepare_mixture_data(_sources(B=empty), _cfg())
    with pytest.raises(ValueError, match="empty"):
        build_union_problem([(np.zeros((0, 3)), np.zeros(0, int)), (np.ones((4, 3)), np.zeros(4, int))],
                            (np.ones((5, 3)), np.zeros(5, int)))


def test_pool_asking_for_more_rows_of_a_class_than_exist_names_the_class():
    cfg = _cfg(pools=[dict(name="a", source="A", n=150, class_proportions={"1": 0.9}), dict(name="b", source="B", n=60)])
    with pytest.raises(WinnowError, match="class '1'"):
        prepare_mixture_data(_sources(), cfg)


def test_dimension_mismatch_between_sources_is_refused():
    with pytest.raises(ValueError, match="d=5 but the target has d=3"):
        build_union_problem([(np.ones((4, 3)), np.zeros(4, int)), (np.ones((4, 5)), np.zeros(4, int))],
                            (np.ones((5, 3)), np.zeros(5, int)))
    with pytest.raises(WinnowError, match="feature dimensions differ"):
        align_features([np.ones((4, 3)), np.ones((4, 5))], [None, None])
    with pytest.raises(WinnowError, match="cannot mix image and non-image"):
        align_features([np.ones((4, 16)), np.ones((4, 5))], [(4, 4), None])


def test_ratio_off_the_simplex_is_refused_by_the_solver():
    prob = build_union_problem([(np.random.default_rng(0).random((6, 2)), np.array([0, 1] * 3))] * 2,
                               (np.random.default_rng(1).random((5, 2)), np.array([0, 1, 0, 1, 0])))
    eng = WeightedOT(prob, solver="exact")
    with pytest.raises(ValueError, match=r"sums to 1.2"):
        eng(np.array([0.6, 0.6]))
    with pytest.raises(ValueError, match="negative"):
        eng(np.array([1.2, -0.2]))
    with pytest.raises(ValueError, match="3 weights but there are 2 sources"):
        eng(np.array([0.2, 0.3, 0.5]))


def test_config_rejects_bad_values_before_anything_runs():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        _cfg(pilot_sizes=[100, 100])
    with pytest.raises(ValidationError):
        _cfg(pools=[dict(name="a", source="A", class_proportions={"0": 0.8, "1": 0.5}), dict(name="b", source="B")])
    with pytest.raises(ValidationError):
        _cfg(ot=dict(lambda_x=0, lambda_y=0))


def test_a_target_size_no_grid_mixture_fits_is_refused_before_any_training():
    from types import SimpleNamespace

    from tasks.mixture.pilots import check_target_capacity
    from tasks.mixture.simplex import simplex_grid
    from tasks.mixture.stage import run_mixture

    grid = simplex_grid(2, 0.25)
    check_target_capacity(np.array([60, 60]), grid, 100, ["a", "b"])  # (0.5, 0.5) takes 50 + 50
    with pytest.raises(WinnowError, match=r"target_n=130 \(pools: 'a' 60, 'b' 60\): lower extrapolation.target_n"):
        check_target_capacity(np.array([60, 60]), grid, 130, ["a", "b"])
    # the stage refuses it before the first pilot (it used to train every pilot, then fail with a ValueError)
    cfg = _cfg(pilot_sizes=[20, 40], grid_step=0.25, extrapolation=dict(target_n=130))
    data = prepare_mixture_data(_sources(), cfg)
    sweeps = [SimpleNamespace(sweep=SimpleNamespace(grid=grid))]

    def train(trials):
        pytest.fail("trained although the target size cannot be drawn")

    with pytest.raises(WinnowError, match="target_n=130"):
        run_mixture(data, cfg, sweeps, None, pools=None, train=train)


def test_the_preflight_and_the_stage_share_one_capacity_check():
    """The mixture preflight runs the stage's own check (pilots and, with train_at_target, the target size),
    so a target no grid mixture fits is refused before the run writes anything."""
    from tasks.mixture.simplex import simplex_grid
    from tasks.mixture.stage import check_capacity

    grid = simplex_grid(2, 0.25)
    assert check_capacity(np.array([60, 60]), grid, _cfg(pilot_sizes=[20, 40], extrapolation=dict(target_n=100)),
                          ["a", "b"]) == 100
    with pytest.raises(WinnowError, match="target_n=130"):
        check_capacity(np.array([60, 60]), grid, _cfg(pilot_sizes=[20, 40], extrapolation=dict(target_n=130)), ["a", "b"])
    # without trainings at the target size only the pilots must fit
    assert check_capacity(np.array([60, 60]), grid, _cfg(pilot_sizes=[20, 40], extrapolation=dict(
        target_n=130, train_at_target=False)), ["a", "b"]) == 130
    with pytest.raises(WinnowError, match="pilot size 80"):
        check_capacity(np.array([60, 60]), grid, _cfg(pilot_sizes=[20, 80]), ["a", "b"])


def test_raw_feature_space_refuses_a_text_source_in_the_preflight():
    """features.space 'raw' cannot take a source without a feature matrix: refused by the preflight's source
    check (it used to reach prepare_mixture_data inside the stage)."""
    from dataclasses import replace

    from configs.base import parse_config
    from flows.mixture import check_sources

    config = parse_config({"sources": [{"name": n, "kind": "sklearn_digits"} for n in "ABT"],
                           "mixture": {"pools": [{"name": "a", "source": "A"}, {"name": "b", "source": "B"}],
                                       "target": {"source": "T"}, "features": {"space": "raw"}}})
    sources = _sources(B=replace(_source(2, "B", 200, ["0", "1", "2"], seed=1), X=None))
    with pytest.raises(WinnowError, match=r"source\(s\) B have no feature matrix for features.space 'raw'"):
        check_sources(config, sources)
    check_sources(config, _sources())


@pytest.mark.parametrize("kind", ["pca", "ssl_cnn"])
def test_an_encoder_fitted_per_source_cannot_be_the_space_of_a_multi_source_mixture(kind):
    """PCA and the SSL CNN are fitted on each source's own rows: two sources' vectors share a width but
    not a space (a review measured nearest-neighbour label agreement across two halves of digits fall
    from 0.91 to 0.05 under PCA). The preflight refuses it; one source alone is fine."""
    from configs.base import parse_config
    from flows.mixture import check_sources

    def config(sources, pools, target):
        return parse_config({"sources": [{"name": n, "kind": "sklearn_digits"} for n in sources],
                             "encoder": {"kind": kind, "dim": 8},
                             "mixture": {"pools": pools, "target": {"source": target}, "features": {"space": "encoder"}}})

    multi = config("ABT", [{"name": "a", "source": "A"}, {"name": "b", "source": "B"}], "T")
    with pytest.raises(WinnowError, match=f"encoder kind '{kind}' is fitted on each source separately"):
        check_sources(multi, _sources())
    one = config("A", [{"name": "a", "source": "A", "n": 50, "seed": 1}, {"name": "b", "source": "A", "n": 50, "seed": 2}], "A")
    try:
        check_sources(one, {"A": _sources()["A"]})
    except WinnowError as err:
        assert "fitted on each source separately" not in str(err)
