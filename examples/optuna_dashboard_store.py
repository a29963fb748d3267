"""A sweep's store, as optuna-dashboard shows it.

A sweep of ``weightdecay sweep`` is one Optuna study in an ordinary Optuna storage, so
optuna-dashboard opens it as it is::

    pip install optuna-dashboard
    optuna-dashboard sqlite:///runs/fig2_small/store.db          # then http://127.0.0.1:8080
    optuna-dashboard postgresql+psycopg2://user:pw@db-host/sweeps  # a shared sweep

This example makes a small real store with ``weightdecay sweep`` (a 1-epoch grid of 2 runs
on scikit-learn's digits, about 10 s on a CPU), then asks optuna-dashboard's own web
application — in process, through its WSGI interface (``optuna_dashboard.wsgi``), the JSON
its browser page fetches, no server or port — for the study, and checks that every trial's
state, value, parameters and user attributes are those stored (``optuna.load_study``), as
the dashboard renders them (strings; lists and dicts as JSON cut at 1024 characters).

    python examples/optuna_dashboard_store.py            # exits 1 on a mismatch
    python examples/optuna_dashboard_store.py --out runs/dash   # keep the store
"""

from __future__ import annotations

import argparse
import io
import json
import numbers
import sys
import tempfile
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard

from weightdecay import cli

SPEC = """
name = "dash"
[defaults]
dataset = "digits"
model = "mlp"
batch_size = 64
[[experiments]]
name = "grid"
figure = "fig2"
epochs = [1]
  [[experiments.optimizers]]
  optimizer = "adamw"
  lr = [0.001, 0.002]
  weight_decay = [0.0005]
"""


def make_store(out: Path) -> str:
    """Run the sweep (``weightdecay sweep SPEC --workers 0 --out OUT``); return its URL."""
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "dash.toml"
    spec.write_text(SPEC)
    code = cli.main(["sweep", str(spec), "--workers", "0", "--out", str(out),
                     "--no-progress"])
    if code != 0:
        raise SystemExit(f"weightdecay sweep failed with exit code {code}")
    return f"sqlite:///{(out / 'store.db').resolve()}"


def dashboard_get(app, path: str) -> dict:
    """GET ``path`` from the dashboard's WSGI app; the decoded JSON body."""
    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"GET {path}: {status}")
    return json.loads(body)


def shown(value) -> str:
    """A user attribute as the dashboard shows it (its documented rendering)."""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):
        return str(value)
    return json.dumps(value)[:1024]


def compare(storage_url: str, study_name: str) -> tuple[list[dict], list[str]]:
    """The dashboard's trials and the mismatches with the stored study (empty: all good)."""
    app = optuna_dashboard.wsgi(storage_url)
    studies = dashboard_get(app, "/api/studies")["study_summaries"]
    summary = next(s for s in studies if s["study_name"] == study_name)
    detail = dashboard_get(app, f"/api/studies/{summary['study_id']}")
    stored = optuna.load_study(study_name=study_name, storage=storage_url)
    errors = []
    study_attrs = {a["key"]: a["value"] for a in summary["user_attrs"]}
    if study_attrs != {k: shown(v) for k, v in stored.user_attrs.items()}:
        errors.append(f"study user attributes differ: {sorted(study_attrs)}")
    trials = {t["number"]: t for t in detail["trials"]}
    if sorted(trials) != [t.number for t in stored.trials]:
        errors.append(f"trials {sorted(trials)} != stored {[t.number for t in stored.trials]}")
    for t in stored.trials:
        d = trials.get(t.number)
        if d is None:
            continue
        if d["state"].upper() != t.state.name:
            errors.append(f"trial {t.number}: state {d['state']} != {t.state.name}")
        if d.get("values") != t.values:
            errors.append(f"trial {t.number}: values {d.get('values')} != {t.values}")
        params = {p["name"]: p["param_external_value"] for p in d["params"]}
        if params != {k: str(v) for k, v in t.params.items()}:
            errors.append(f"trial {t.number}: params {params} != {t.params}")
        attrs = {a["key"]: a["value"] for a in d["user_attrs"]}
        if attrs != {k: shown(v) for k, v in t.user_attrs.items()}:
            errors.append(f"trial {t.number}: user attributes differ: "
                          f"{sorted(set(attrs) ^ set(t.user_attrs))}")
    return detail["trials"], errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the sweep's store here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = make_store(args.out or Path(tmp) / "dash")
        trials, errors = compare(url, "dash")
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        config = json.loads(attrs["config"])
        print(f"trial {t['number']}: {t['state']:8s} value {t['values'][0]:.4f}  "
              f"optimizer {config['optimizer']} lr {config['lr']} "
              f"weight_decay {config['weight_decay']}  user attributes: {', '.join(attrs)}")
    for line in errors:
        print("MISMATCH", line, file=sys.stderr)
    print(f"optuna-dashboard lists {len(trials)} trials with the stored states, values, "
          "parameters and user attributes" if not errors else f"{len(errors)} mismatches")
    if args.out:
        print(f"view it: optuna-dashboard {url}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
