"""Banded grids (harness/band.py, the ``band`` of a spec's optimizer entry)."""

from __future__ import annotations

import math

import pytest

from weightdecay.harness.band import band_cells, bracket_next
from weightdecay.harness.presets import get_preset
from weightdecay.harness.spec import SpecError, plan_sweep, with_seeds


def _pow2(lo, hi):
    return [2.0**k for k in range(lo, hi + 1)]


def spec(band=None, lr=None, wd=None, seeds=(0, 1), optimizer="adamw"):
    entry = {"optimizer": optimizer, "lr": lr or _pow2(-7, -3),
             "weight_decay": wd or _pow2(-12, -3)}
    if band is not None:
        entry["band"] = band
    return {"name": "b", "defaults": {"dataset": "digits", "model": "mlp", "epochs": 1},
            "experiments": [{"name": "fig2", "figure": "fig2", "seeds": list(seeds),
                             "optimizers": [entry]}]}


def rows(plan):
    out = {}
    for r in plan.runs:
        out.setdefault((r.config.lr, r.config.seed), []).append(r.config.weight_decay)
    return out


@pytest.mark.parametrize("slope", [-1.0, 0.0, 1.0, 0.5])
def test_the_band_follows_its_line_and_every_seed_gets_the_same_cells(slope):
    band = {"lr": 2.0**-5, "weight_decay": 2.0**-7, "slope": slope, "cells": 5}
    plan = plan_sweep(spec(band))
    got = rows(plan)
    assert len(plan.runs) == 5 * 5 * 2
    for lr in _pow2(-7, -3):
        assert got[(lr, 0)] == got[(lr, 1)]
        cells = [math.log2(v) for v in got[(lr, 0)]]
        centre = -7 + slope * (math.log2(lr) + 5)
        assert cells == sorted(cells) and len(cells) == 5
        assert cells[-1] - cells[0] == 4  # contiguous in the grid
        assert abs(sum(cells) / 5 - centre) <= 0.5 + 1e-9  # centred on the line


def test_banded_runs_are_runs_of_the_whole_grid_with_the_same_keys():
    whole = plan_sweep(spec())
    banded = plan_sweep(spec({"lr": 2.0**-5, "weight_decay": 2.0**-7, "slope": 1.0,
                              "cells": 4}))
    keys = [r.key for r in whole.runs]
    got = [r.key for r in banded.runs]
    assert set(got) <= set(keys) and len(got) == 5 * 4 * 2
    assert got == [k for k in keys if k in set(got)]  # the grid's order is kept


def test_a_tie_keeps_the_smaller_decay():
    # centre halfway between 2^-8 and 2^-7: -8 and -7, then -9 of the tie -9 / -6
    assert band_cells(_pow2(-12, -3), 1.0, 1.0, 2.0**-7.5, 0.0, 3) == _pow2(-9, -7)


def test_the_quick_preset_runs_its_bands_inside_its_grids_and_replicates_with_them():
    quick = get_preset("quick")
    plan = plan_sweep(quick)
    assert len(plan.runs) == 4 * 5 * 5 * 2  # optimizers x alpha rows x band cells x seeds
    for entry in quick["experiments"][0]["optimizers"]:
        grid = entry["weight_decay"]
        for lr in entry["lr"]:
            cells = [r.config.weight_decay for r in plan.runs
                     if r.config.optimizer == entry["optimizer"] and r.config.lr == lr
                     and r.config.seed == 0]
            assert len(cells) == 5 and grid[0] < cells[0] and cells[-1] < grid[-1]
    rep = with_seeds(quick, [100, 101])
    assert len(rep.runs) == len(plan.runs) and {r.config.seed for r in rep.runs} == {100, 101}


@pytest.mark.parametrize("band, needle", [
    ("wide", "must be a table"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0}, "'cells' is missing"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 5, "width": 2}, "unknown key"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 2}, "from 3"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 11}, "grid's 10"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 5.0}, "integer"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": True}, "integer"),
    ({"lr": 0.0, "weight_decay": 0.01, "slope": 0.0, "cells": 5}, "> 0"),
    ({"lr": 0.01, "weight_decay": -1.0, "slope": 0.0, "cells": 5}, "> 0"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": "up", "cells": 5}, "finite number"),
    ({"lr": 0.01, "weight_decay_norm": 0.01, "slope": 0.0, "cells": 5}, "unknown key"),
    ({"lr": 2.0**-5, "weight_decay": 2.0**-7, "slope": 3.0, "cells": 5}, "outside the grid"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 5, "extend": -1}, "extend=-1"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 5, "extend": 6}, "from 0 to"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 5, "extend": 1.0}, "integer"),
    ({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 5, "extend": True}, "integer"),
])
def test_bad_bands_are_refused_in_one_line(band, needle):
    with pytest.raises(SpecError, match=needle) as info:
        plan_sweep(spec(band))
    assert "band" in str(info.value) and "\n" not in str(info.value)


def test_a_band_needs_a_positive_decay_grid():
    with pytest.raises(SpecError, match="must be > 0 for a band"):
        plan_sweep(spec({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 3},
                        wd=[0.0, 0.01, 0.02, 0.04]))


# ------------------------------------------------------------------------------ bracketing


def test_bracket_next_adds_the_grid_value_beyond_an_edge_optimum():
    grid = _pow2(-12, -3)
    cells = _pow2(-9, -6)
    err = dict(zip(cells, [0.10, 0.20, 0.30, 0.40]))  # best at the smallest cell
    assert bracket_next(grid, cells, err) == 2.0**-10
    err = dict(zip(cells, [0.40, 0.30, 0.20, 0.10]))  # best at the largest
    assert bracket_next(grid, cells, err) == 2.0**-5
    err = dict(zip(cells, [0.40, 0.10, 0.20, 0.30]))  # bracketed
    assert bracket_next(grid, cells, err) is None
    err = dict(zip(cells, [0.10, 0.10, 0.20, 0.30]))  # a tie goes to the smaller decay
    assert bracket_next(grid, cells, err) == 2.0**-10
    # at the grid's own edge there is nothing to add; a row that diverged has no optimum
    assert bracket_next(grid, _pow2(-12, -9), dict(zip(_pow2(-12, -9), [0.1, 0.2, 0.3, 0.4]))
                        ) is None
    assert bracket_next(grid, cells, dict.fromkeys(cells, math.inf)) is None


def _outcomes(plan, error):
    """Run key -> a made-up final test error: error(log2 decay, lr, seed)."""
    return {r.key: error(math.log2(r.config.weight_decay), r.config.lr, r.config.seed)
            for r in plan.runs}


def test_a_band_with_extend_brackets_each_rows_optimum_and_stops_at_extend():
    band = {"lr": 2.0**-5, "weight_decay": 2.0**-7, "slope": 0.0, "cells": 4, "extend": 3}
    base = plan_sweep(spec(band))
    assert {tuple(v) for v in rows(base).values()} == {tuple(_pow2(-9, -6))}
    # the true optimum of row lr lies at log2 λ = -11 for the smallest lr, -7.5 elsewhere;
    # seed 1 is noisier but agrees on the mean
    def error(x, lr, seed):
        opt = -11.0 if lr == 2.0**-7 else -7.5
        return 0.1 + 0.01 * (x - opt) ** 2 + 0.001 * seed

    plan, seen = base, []
    while True:  # the rounds the runner makes: run, then plan with the outcomes so far
        more = plan_sweep(spec(band), outcomes=_outcomes(plan, error))
        seen.append(len(more.runs))
        if len(more.runs) == len(plan.runs):
            break
        plan = more
    got = rows(plan)
    # the first row walks down to -12, one value per round, and stops there: extend = 3
    assert got[(2.0**-7, 0)] == got[(2.0**-7, 1)] == _pow2(-12, -6)
    for lr in _pow2(-6, -3):  # bracketed from the start: unchanged
        assert got[(lr, 0)] == got[(lr, 1)] == _pow2(-9, -6)
    assert seen == [len(base.runs) + 2, len(base.runs) + 4, len(base.runs) + 6,
                    len(base.runs) + 6]
    # the keys of the added runs are the whole grid's (the same runs, the same order)
    whole = [r.key for r in plan_sweep(spec()).runs]
    assert [r.key for r in plan.runs] == [k for k in whole if k in {r.key for r in plan.runs}]


def test_a_row_is_extended_only_once_all_its_seeds_have_run():
    band = {"lr": 2.0**-5, "weight_decay": 2.0**-7, "slope": 0.0, "cells": 4, "extend": 2}
    base = plan_sweep(spec(band))
    done = _outcomes(base, lambda x, lr, seed: 0.1 + 0.01 * (x + 12) ** 2)  # edge everywhere
    missing = next(r.key for r in base.runs if r.config.lr == 2.0**-7 and r.config.seed == 1)
    partial = {k: v for k, v in done.items() if k != missing}
    got = rows(plan_sweep(spec(band), outcomes=partial))
    assert got[(2.0**-7, 0)] == _pow2(-9, -6)  # that row waits for its last run
    assert got[(2.0**-6, 0)] == _pow2(-10, -6)  # the others grow by one value
    # without extend, outcomes change nothing
    fixed = {k: v for k, v in band.items() if k != "extend"}
    assert [r.key for r in plan_sweep(spec(fixed), outcomes=done).runs] == \
        [r.key for r in plan_sweep(spec(fixed)).runs]
