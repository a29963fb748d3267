"""Banded grids (harness/band.py, the ``band`` of a spec's optimizer entry)."""

from __future__ import annotations

import math

import pytest

from weightdecay.harness.band import band_cells
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
])
def test_bad_bands_are_refused_in_one_line(band, needle):
    with pytest.raises(SpecError, match=needle) as info:
        plan_sweep(spec(band))
    assert "band" in str(info.value) and "\n" not in str(info.value)


def test_a_band_needs_a_positive_decay_grid():
    with pytest.raises(SpecError, match="must be > 0 for a band"):
        plan_sweep(spec({"lr": 0.01, "weight_decay": 0.01, "slope": 0.0, "cells": 3},
                        wd=[0.0, 0.01, 0.02, 0.04]))
