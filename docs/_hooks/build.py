"""MkDocs hooks: the parts of the site generated at build time from the library itself.

- ``<!-- gen:conventions -->``: the table of decay conventions, one row per name in
  ``weightdecay.DECAY_CONVENTIONS`` (a name without a row here fails the build).
- ``<!-- gen:run examples/NAME.py -->``: the example's source, run now; its output below it
  (a non-zero exit fails the build), so the numbers on the page are computed, not typed.
- ``schedules/*.png``: one plot per entry of :data:`SCHEDULE_PLOTS`, drawn from the
  library's closed-form schedules (never committed).
- ``--8<-- "docs/results/quick.md"``: the lead's generated results table, included as it is
  committed; while that file does not exist yet the include becomes a note instead.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ decay conventions
# name -> (decay applied per update, torch.optim.AdamW's default weight_decay=0.01 in this
# convention, who uses it, a paragraph). Adding a convention to the library is one entry here;
# the build fails while weightdecay.DECAY_CONVENTIONS has a name without one. Entries for names
# the library does not have (yet) are not shown.
CONVENTIONS = {
    "schedule": (
        "η_t·λ", "λ = 0.01·α (1e-5 at α = 1e-3)",
        "the paper, the authors' code, Composer's DecoupledAdamW",
        "The paper's Algorithms 1 and 2: the decay follows the schedule multiplier η_t and "
        "not the base learning rate α, so the best λ stays put when α moves (Fig. 2's "
        "separable basin). `wd.AdamW(lr=α, weight_decay=λ)` equals "
        "`torch.optim.AdamW(lr=α, weight_decay=λ/α)` under any schedule."),
    "lr": (
        "lr_t·λ = α·η_t·λ", "λ = 0.01", "torch.optim.AdamW, optax.adamw, Keras AdamW",
        "What most libraries do: the decay is multiplied by the learning rate, so doubling α "
        "doubles the decay. With this convention `wd.AdamW` and `torch.optim.AdamW` take the "
        "same `weight_decay` number."),
    "constant": (
        "λ", "λ = 0.01·lr_t, set at every update by hand", "TF-Addons (the user schedules λ)",
        "The same decay at every update, whatever the schedule: the user schedules λ by "
        "hand (TF-Addons' `DecoupledWeightDecayExtension` leaves it to the user)."),
    "corrected": (
        "lr_t·(lr_t / lr_max)·λ", "λ = 0.01 at the peak (η_t = 1) only: torch's decay falls "
        "with η_t, this one with η_t²", "AdamC (arXiv 2506.02285), timm's `adamc`",
        "The torch convention times lr_t/lr_max: the decay falls with the square of the "
        "schedule (AdamC's correction, aimed at the gradient norms that rise at the end of "
        "training)."),
}


def conventions_table() -> str:
    from weightdecay import DECAY_CONVENTIONS

    unknown = [name for name in DECAY_CONVENTIONS if name not in CONVENTIONS]
    if unknown:
        raise PluginError(f"weightdecay.DECAY_CONVENTIONS has {unknown} without a row in "
                          "docs/_hooks/build.py CONVENTIONS: add its update equation there")
    rows = ["| `decay_convention=` | decay applied per update | torch.optim.AdamW's default "
            "(`weight_decay=0.01`) is | who uses it |",
            "|---|---|---|---|"]
    for name in DECAY_CONVENTIONS:
        decay, torch_default, who, _ = CONVENTIONS[name]
        default = " (default)" if name == DECAY_CONVENTIONS[0] else ""
        rows.append(f'| `"{name}"`{default} | {decay} | {torch_default} | {who} |')
    rows.append("")
    rows.append("The default λ (`weight_decay=`) of every optimizer here is 0: no decay unless "
                "asked for, where `torch.optim.AdamW` decays by default (0.01; its `Adam` and "
                "`SGD` default to 0 as well).")
    return "\n".join(rows)


def convention_notes() -> str:
    from weightdecay import DECAY_CONVENTIONS

    conventions_table()  # the same check
    return "\n\n".join(f'**`"{name}"`** — decay {CONVENTIONS[name][0]} per update. '
                         f"{CONVENTIONS[name][3]}" for name in DECAY_CONVENTIONS)


# ------------------------------------------------------------------ examples run at build
def run_example(relpath: str) -> str:
    path = ROOT / relpath
    if not path.is_file():
        raise PluginError(f"gen:run: {relpath} does not exist")
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    if proc.returncode != 0:
        raise PluginError(f"gen:run: {relpath} exited {proc.returncode}:\n{proc.stderr}")
    source = path.read_text().rstrip()
    return (f'```python title="{relpath}"\n{source}\n```\n\n'
            f"Its output, from this build:\n\n```text\n{proc.stdout.rstrip()}\n```")


# ------------------------------------------------------------------ schedule plots
def _schedules():
    from weightdecay import schedules as S

    T = 1000  # updates shown in each plot
    return {
        "constant": (S.constant(), "constant()  — the paper's fixed schedule"),
        "step_drop": (S.step_drop([300, 600, 800], factor=0.1),
                      "step_drop([300, 600, 800], factor=0.1)  — Fig. 1's drops at 30/60/80 %"),
        "linear": (S.linear(T), "linear(1000)"),
        "cosine": (S.cosine(T), "cosine(1000)"),
        "cosine_restarts": (S.cosine_restarts(T_0=100, T_mult=2),
                            "cosine_restarts(T_0=100, T_mult=2)  — SGDR / AdamWR"),
        "cosine_restarts_decay": (
            S.cosine_restarts(T_0=100, T_mult=1.5, amplitude_decay=0.7),
            "cosine_restarts(T_0=100, T_mult=1.5, amplitude_decay=0.7)"),
        "warmup_cosine": (S.linear_warmup(100) * S.cosine(T),
                          "linear_warmup(100) * cosine(1000)"),
        "join": (S.join([S.linear_warmup(100), S.cosine(T - 100)], boundaries=[100]),
                 "join([linear_warmup(100), cosine(900)], boundaries=[100])"),
    }, T


def plot_png(schedule, title: str, T: int) -> bytes:
    import numpy as np
    from matplotlib.figure import Figure

    t = np.arange(T + 1, dtype=float)
    fig = Figure(figsize=(6.4, 2.2), dpi=100)
    ax = fig.add_subplot()
    ax.plot(t, schedule(t), lw=1.6)
    if getattr(schedule, "has_restarts", False):
        for end in schedule.period_ends(T):
            ax.axvline(end, color="0.75", lw=0.8, ls="--")
    ax.set_xlim(0, T)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("update t")
    ax.set_ylabel("η_t")
    ax.set_title(title, fontsize=9, family="monospace")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def on_files(files, config, **kwargs):
    plots, T = _schedules()
    for name, (schedule, title) in plots.items():
        files.append(File.generated(config, f"schedules/{name}.png",
                                    content=plot_png(schedule, title, T)))
    return files


# ------------------------------------------------------------------ page markers
_RUN = re.compile(r"<!-- gen:run (\S+) -->")
_EVAL = re.compile(r"<!-- gen:eval (.+?) -->")


def evaluate(expression: str) -> str:
    """A Python expression over ``wd`` (the library), evaluated now: a number on a page."""
    import weightdecay

    try:
        return str(eval(expression, {"wd": weightdecay}))  # noqa: S307 - our own pages
    except Exception as exc:
        raise PluginError(f"gen:eval {expression!r}: {type(exc).__name__}: {exc}") from exc
_RESULTS = re.compile(r'^--8<-- "(docs/results/[^"]+)"$', re.M)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if "<!-- gen:conventions -->" in markdown:
        markdown = markdown.replace("<!-- gen:conventions -->", conventions_table())
    if "<!-- gen:convention-notes -->" in markdown:
        markdown = markdown.replace("<!-- gen:convention-notes -->", convention_notes())
    markdown = _EVAL.sub(lambda m: evaluate(m.group(1)), markdown)
    markdown = _RUN.sub(lambda m: run_example(m.group(1)), markdown)

    def results(m: re.Match) -> str:
        if (ROOT / m.group(1)).is_file():
            return m.group(0)  # pymdownx.snippets includes it as committed
        return (f'!!! note "Not generated yet"\n    `{m.group(1)}` is written by the claims '
                "scorecard of the experiment harness and committed with the results; this "
                "page shows it once it exists.")

    return _RESULTS.sub(results, markdown)
