"""Bootstrap replicates of test errors, resampling seeds and test examples together.

A stored trial keeps *which* test examples its final model misclassifies
(``record["final_test_wrong"]``, see ``weightdecay.harness.train.pack_wrong``). Every
statistic of the report is a function of the runs' final test errors, so one set of
replicates serves them all:

* **test examples** are resampled with replacement (one multinomial draw of example counts
  per replicate, shared by every run: all runs are scored on the same test sample, so a
  comparison between two settings stays *paired*);
* **seeds** are resampled with replacement (one draw of seed counts per replicate, shared
  by every setting: runs with one seed share their initialization and data order).

Replicate 0 is the data themselves (every example and every seed once). A run without a
stored vector (an old store) keeps its stored error in every replicate: only its seed is
resampled. Diverged runs have error NaN.

With S seeds the seed resampling underestimates seed variance by a factor (S-1)/S (the
plug-in bootstrap); intervals are therefore a little optimistic with 2 seeds and close to
nominal from 3-4 seeds on — the design document chooses seed counts with that in mind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from weightdecay.harness.vectors import unpack_wrong

__all__ = ["DEFAULT_REPLICATES", "Replicates", "replicate_errors"]

#: bootstrap replicates per report: 90 % percentile intervals from 2000 replicates have a
#: Monte-Carlo error of about 1 % of their width
DEFAULT_REPLICATES = 2000
#: fixed seed of the bootstrap's own generator: a report is a deterministic function of
#: its store
BOOTSTRAP_SEED = 20190506


@dataclass(frozen=True)
class Replicates:
    """Bootstrap replicates of every run's final test error.

    Attributes:
        errors: ``(B + 1, runs)`` test error of each run in each replicate (row 0: the data;
            NaN for diverged runs).
        seed_counts: ``(B + 1, S)`` how often each seed is drawn in each replicate (row 0:
            all ones).
        seeds: the ``S`` distinct seeds, sorted; ``seed_index[r]`` is run ``r``'s column.
        seed_index: ``(runs,)``.
        num_test: test examples per run (the largest among the runs).
        paired: True when every run carried its per-example vector (the test sample is
            resampled); False when some runs only have their error.
    """

    errors: np.ndarray
    seed_counts: np.ndarray
    seeds: np.ndarray
    seed_index: np.ndarray
    num_test: int
    paired: bool

    @property
    def n_boot(self) -> int:
        return self.errors.shape[0] - 1

    def cell(self, runs: Sequence[int]) -> np.ndarray:
        """``(B + 1,)`` mean error over the runs of one setting (one run per seed), the
        seeds weighted by their draw counts. NaN where any drawn run diverged, and where
        none of the setting's seeds is drawn (then the setting has no value in that
        replicate; statistics skip such replicates)."""
        runs = np.asarray(runs, dtype=int)
        w = self.seed_counts[:, self.seed_index[runs]].astype(float)  # (B+1, k)
        e = self.errors[:, runs]
        bad = np.isnan(e) & (w > 0)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(total > 0, np.nansum(np.where(w > 0, e, 0.0) * w, axis=1) / total,
                            np.nan)
        mean[bad.any(axis=1)] = np.nan
        return mean


def replicate_errors(
    records: Sequence[Mapping],
    n_boot: int = DEFAULT_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> Replicates:
    """Bootstrap replicates of the final test errors of ``records`` (completed trials).

    Runs must share one test sample (the same ``num_test``) to be resampled together; runs
    with another test-set size raise ``ValueError`` (build one :class:`Replicates` per
    experiment).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not records:
        raise ValueError("replicate_errors needs at least one record")
    sizes = {int(r["num_test"]) for r in records
             if r.get("num_test") is not None and math.isfinite(float(r["num_test"]))
             and float(r["num_test"]) > 0}
    if len(sizes) > 1:
        raise ValueError(f"records were scored on test samples of different sizes "
                         f"{sorted(sizes)}; resample each experiment on its own")
    n = sizes.pop() if sizes else 0
    seeds = np.array(sorted({int(r["seed"]) for r in records}))
    seed_index = np.searchsorted(seeds, [int(r["seed"]) for r in records])
    rng = np.random.default_rng(seed)
    S = len(seeds)
    seed_counts = np.vstack([np.ones((1, S), dtype=np.int64),
                             rng.multinomial(S, np.full(S, 1.0 / S), size=n_boot)])

    point = np.array([float("nan") if r.get("diverged") or r.get("final_test_error") is None
                      else float(r["final_test_error"]) for r in records])
    have = [i for i, r in enumerate(records)
            if isinstance(r.get("final_test_wrong"), str) and not r.get("diverged") and n > 0]
    errors = np.repeat(point[None, :], n_boot + 1, axis=0)
    if have:
        wrong = np.stack([unpack_wrong(records[i]["final_test_wrong"], n) for i in have])
        # example counts of each replicate: (B, n), each row sums to n
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float32)
        errors[1:, have] = (counts @ wrong.T.astype(np.float32)) / n
        errors[0, have] = wrong.mean(axis=1)
    return Replicates(errors, seed_counts, seeds, seed_index, n,
                      paired=len(have) == len(records))
