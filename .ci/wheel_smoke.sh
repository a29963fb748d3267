#!/usr/bin/env bash
# The package as a user installs it: `python -m build` makes the sdist and the wheel (the wheel
# built from the sdist), the wheel is installed (not editable) into a clean venv and run from
# outside the source tree, in two stages:
#   1. core install (torch + numpy only): `import weightdecay`, an AdamW step under a warm-
#      restart scheduler, `weightdecay --help`, and every command exits 2 with one line naming
#      the harness extra and writes nothing;
#   2. with the harness extra: `weightdecay --help` and one 1-epoch `train`.
# torch comes from the pinned on-disk wheel: every install is constrained by requirements.txt.
# Usage: .ci/wheel_smoke.sh   (`make wheel-smoke`; needs `build` in .venv: requirements-dist.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PY:-python3}"
DIST="$ROOT/build/dist"
VENV="$ROOT/build/wheel-venv"
WORK="$(mktemp -d /tmp/weightdecay-wheel.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
pip_install() {  # quiet unless it fails
  "$VENV/bin/pip" install -q "$@" >"$WORK/pip.log" 2>&1 || { grep -v "is ignored" "$WORK/pip.log"; exit 1; }
}

rm -rf "$DIST" "$VENV"
.venv/bin/python -m build --outdir "$DIST" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
WHEEL="$(ls "$DIST"/weightdecay-*-py3-none-any.whl)"
SDIST="$(ls "$DIST"/weightdecay-*.tar.gz)"
echo "built $(basename "$SDIST") and $(basename "$WHEEL")"

# -- the wheel holds every module of src/weightdecay and py.typed ----------------------------
"$PY" - "$WHEEL" <<'EOF'
import pathlib, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
src = pathlib.Path("src")
want = {p.relative_to(src).as_posix() for p in (src / "weightdecay").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed")}
missing = sorted(want - names)
assert not missing, f"missing from the wheel: {missing}"
print(f"wheel: {len(want)} package files present (py.typed included)")
EOF

# -- 1. core install: torch + numpy, no harness extra ----------------------------------------
"$PY" -m venv "$VENV"
pip_install "$WHEEL" -c "$ROOT/requirements.txt"
cd "$WORK"
export WEIGHTDECAY_CACHE="$WORK/cache"
"$VENV/bin/python" - "$VENV" <<'EOF'
import importlib.util, pathlib, sys
import torch
import weightdecay as wd
from weightdecay.api import HARNESS_MODULES

venv = pathlib.Path(sys.argv[1]).resolve()
assert venv in pathlib.Path(wd.__file__).resolve().parents, wd.__file__  # not the source tree
present = [m for m in HARNESS_MODULES if importlib.util.find_spec(m) is not None]
assert not present, f"core install has harness modules: {present}"
p = torch.nn.Parameter(torch.ones(4))
opt = wd.AdamW([p], lr=1e-3, weight_decay=0.5)
lr_sched = wd.schedules.as_torch_scheduler(opt, wd.schedules.cosine_restarts(T_0=4, T_mult=2))
for _ in range(3):
    p.grad = torch.zeros(4)
    opt.step()
    lr_sched.step()
eta = wd.schedules.cosine_restarts(T_0=4, T_mult=2)
expected = 1.0
for t in range(3):
    expected *= 1 - eta(t) * 0.5  # zero gradient: only the decay eta_t * lambda moves p
assert abs(p[0].item() - expected) < 1e-6, (p[0].item(), expected)
core = [n for n in wd.__all__ if n not in ("harness", "report", "cli", "RunConfig",
                                           "write_report")]
for name in core:
    getattr(wd, name)
print(f"core install: weightdecay {wd.__version__} from {pathlib.Path(wd.__file__).parent}, "
      f"torch {torch.__version__}; {len(core)} public names resolve, AdamW decay = eta_t*lambda")
EOF
"$VENV/bin/weightdecay" --help >/dev/null
for argv in "train --epochs 1" \
            "sweep --optimizers adamw --lr 0.001 --out out" \
            "worker --storage sqlite:///out/store.db --study s" \
            "report --storage sqlite:///out/store.db --study s --out out" \
            "export --storage sqlite:///out/store.db --study s -o out/x.csv" \
            "reproduce --preset quick --out out"; do
  rc=0
  # shellcheck disable=SC2086
  "$VENV/bin/weightdecay" $argv >"$WORK/stdout" 2>"$WORK/stderr" || rc=$?
  lines="$(wc -l <"$WORK/stderr")"
  if [ "$rc" != 2 ] || [ "$lines" != 1 ] || [ -s "$WORK/stdout" ] || [ -e out ] || [ -e cache ] \
     || ! grep -q "pip install 'weightdecay\[harness\]'" "$WORK/stderr"; then
    echo "FAIL: 'weightdecay $argv' without the harness extra: exit $rc, stderr:"; cat "$WORK/stderr"
    exit 1
  fi
done
echo "core install: all 6 commands exit 2 with one line: $(cat "$WORK/stderr")"

# -- 2. with the harness extra ---------------------------------------------------------------
pip_install "$WHEEL[harness]" -c "$ROOT/requirements.txt"
"$VENV/bin/weightdecay" --help >/dev/null
"$VENV/bin/weightdecay" train --epochs 1 --json "$WORK/one.json"
"$VENV/bin/python" -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert r['config']['epochs'] == 1 and len(r['history']['epoch']) == 1, r['history']
assert 0 <= r['final_test_error'] <= 1
" "$WORK/one.json"
echo "wheel smoke test passed"
