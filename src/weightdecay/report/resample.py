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

The plug-in bootstrap of a mean over S seeds (S draws with replacement) underestimates its
variance by the factor (S-1)/S — by half with 2 seeds. Each replicate therefore draws
**S-1** seeds with replacement (for S >= 2): the variance of their mean is then exactly the
usual s^2/S, and every value stays an observed error (inflating the seeds' deviations
instead would push errors below 0 when two seeds disagree widely). With 2 seeds a replicate
is one seed's heat map; with one seed no seed variance can be estimated and the intervals
cover test-sample noise only (the report says how many seeds it had).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from weightdecay.harness.vectors import unpack_wrong

__all__ = ["BOOTSTRAP_SEED", "DEFAULT_REPLICATES", "Replicates"]

#: bootstrap replicates per report: 90 % percentile intervals from 2000 replicates have a
#: Monte-Carlo error of about 1 % of their width
DEFAULT_REPLICATES = 2000
#: fixed seed of the bootstrap's own generator: a report is a deterministic function of
#: its store
BOOTSTRAP_SEED = 20190506


def _vector_at(record: Mapping, epoch: int | None) -> str | None:
    if epoch is None:
        v = record.get("final_test_wrong")
        return v if isinstance(v, str) else None
    hist = record.get("history") or {}
    epochs, vecs = hist.get("epoch") or [], hist.get("test_wrong") or []
    for e, v in zip(epochs, vecs):
        if e == epoch:
            return v if isinstance(v, str) else None
    return None


def _error_at(record: Mapping, epoch: int | None) -> float:
    if epoch is None:
        if record.get("diverged") or record.get("final_test_error") is None:
            return float("nan")
        return float(record["final_test_error"])
    hist = record.get("history") or {}
    for e, v in zip(hist.get("epoch") or [], hist.get("test_error") or []):
        if e == epoch and v is not None:
            return float(v)
    return float("nan")


class Replicates:
    """Bootstrap draws over one group of runs scored on one test sample.

    One draw of seed counts and one of test-example counts per replicate, made once, serve
    every statistic computed from these runs (at any epoch), so that all comparisons stay
    paired. Row 0 of every array is the data themselves.

    Attributes:
        records: the runs, in the order of the run axis.
        seed_counts: ``(B + 1, S)`` how often each distinct seed is drawn.
        seeds: the ``S`` distinct seeds, sorted; ``seed_index[r]`` is run ``r``'s column.
        num_test: test examples per run.
        paired: True when every run carries its per-example vectors (the test sample is
            resampled); False when some runs only have their error rates.
    """

    def __init__(self, records: Sequence[Mapping], n_boot: int = DEFAULT_REPLICATES,
                 seed: int = BOOTSTRAP_SEED) -> None:
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
            raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
        if not records:
            raise ValueError("a bootstrap needs at least one record")
        sizes = {int(r["num_test"]) for r in records
                 if r.get("num_test") is not None and math.isfinite(float(r["num_test"]))
                 and float(r["num_test"]) > 0}
        if len(sizes) > 1:
            raise ValueError(f"records were scored on test samples of different sizes "
                             f"{sorted(sizes)}; resample each experiment on its own")
        self.records = list(records)
        self.num_test = sizes.pop() if sizes else 0
        self.seeds = np.array(sorted({int(r["seed"]) for r in records}))
        self.seed_index = np.searchsorted(self.seeds, [int(r["seed"]) for r in records])
        rng = np.random.default_rng(seed)
        S, n = len(self.seeds), self.num_test
        draws = max(1, S - 1)  # S-1 draws: an unbiased variance of the mean (module docstring)
        self.seed_counts = np.vstack([np.ones((1, S), dtype=np.int64),
                                      rng.multinomial(draws, np.full(S, 1.0 / S), size=n_boot)])
        # example counts of each replicate: (B, n), each row sums to n
        self._example_counts = (rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
                                .astype(np.float32) if n else None)
        self._cache: dict[int | None, np.ndarray] = {}
        self.paired = all(_vector_at(r, None) is not None or r.get("diverged")
                          for r in records) and n > 0

    @property
    def n_boot(self) -> int:
        return self.seed_counts.shape[0] - 1

    def errors(self, epoch: int | None = None) -> np.ndarray:
        """``(B + 1, runs)`` test error of every run in every replicate, at the end of the
        run (``epoch=None``) or after ``epoch``. NaN for diverged runs and runs with no
        evaluation at that epoch. Runs without a stored vector keep their error rate in
        every replicate."""
        if epoch in self._cache:
            return self._cache[epoch]
        point = np.array([_error_at(r, epoch) for r in self.records])
        out = np.repeat(point[None, :], self.n_boot + 1, axis=0)
        vecs = [_vector_at(r, epoch) for r in self.records]
        packed = {i: v for i, v in enumerate(vecs) if v is not None and np.isfinite(point[i])}
        have = list(packed)
        if have and self._example_counts is not None:
            wrong = np.stack([unpack_wrong(packed[i], self.num_test) for i in have])
            out[1:, have] = (self._example_counts @ wrong.T.astype(np.float32)) / self.num_test
            out[0, have] = wrong.mean(axis=1)
        self._cache[epoch] = out
        return out

    def mean(self, runs: Sequence[int], epoch: int | None = None) -> np.ndarray:
        """``(B + 1,)`` mean error over ``runs`` (one setting, one run per seed), each run
        weighted by its seed's draw count. NaN where a drawn run diverged or where none of
        the runs' seeds is drawn (statistics skip such replicates)."""
        runs_a = np.asarray(list(runs), dtype=int)
        if runs_a.size == 0:
            return np.full(self.n_boot + 1, np.nan)
        w = self.seed_counts[:, self.seed_index[runs_a]].astype(float)  # (B+1, k)
        e = self.errors(epoch)[:, runs_a]
        drawn = w > 0
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(drawn, np.nan_to_num(e) * w, 0.0).sum(axis=1) / total
        mean[total == 0] = np.nan
        mean[(np.isnan(e) & drawn).any(axis=1)] = np.nan
        return mean
