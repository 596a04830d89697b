"""Pieces of the HTML report: escaping, number formatting, badges, and the matplotlib plots (PNG, base64-embedded).

Names, prompts and generations come from vector files and model output: every one goes through `h` (control,
bidi-override and surrogate characters made visible, then HTML-escaped); plot titles are cut short and drawn without
mathtext, so a `$` in a name cannot break the plot."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from realize.evidence import ActivationScore, BehaviorScore, Score
from realize.data.safe_text import printable

BADGE = {"realizable": "#1a7f37", "partially realizable": "#9a6700", "direction realizable": "#8250df",
         "direction partially realizable": "#8250df", "generically realizable": "#bc4c00",
         "form realizable": "#bf8700",
         "not realizable": "#cf222e", "inconclusive": "#656d76",
         "no natural candidate": "#57606a"}


def png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def h(text: str, *, multiline: bool = False) -> str:
    """Untrusted text as HTML: no raw ESC/NUL/CR, no bidi overrides, no markup."""
    return html.escape(printable(text, keep_newlines=multiline))


def title(name: str, what: str) -> str:
    """A plot title: a name from a file can be 100k characters long (the PNG would be too) or hold control bytes."""
    return f"{printable(name, limit=60)}: {what}"


def badge(verdict: str) -> str:
    return f'<span class="badge" style="background:{BADGE.get(verdict, "#656d76")}">{html.escape(verdict)}</span>'


def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def pair(interval: tuple[float, float] | None) -> str:
    return f" [{fmt(interval[0])}, {fmt(interval[1])}]" if interval else ""


def scatter_plot(name: str, what: str, points: Sequence[tuple[float, float, float]],
                 marks: Sequence[tuple[float, float, str, str]], null: Sequence[float], positive: Sequence[float],
                 ylabel: str) -> str:
    """Value vs perplexity for every evaluated prompt (points: perplexity, value, realism), with the null and
    positive ranges and marked points (perplexity, value, marker, label)."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    if null:
        ax.axhspan(min(null), max(null), color="#cf222e", alpha=0.12, label="nulls (random directions)")
    if positive:
        ax.axhspan(min(positive), max(positive), color="#1a7f37", alpha=0.12, label="positive controls")
    shown = [p for p in points if p[0] > 0 and math.isfinite(p[0]) and math.isfinite(p[1])]
    if shown:
        scatter = ax.scatter([p[0] for p in shown], [p[1] for p in shown], c=[p[2] for p in shown], cmap="viridis",
                             vmin=0, vmax=1, s=28, edgecolors="k", linewidths=0.3)
        fig.colorbar(scatter, ax=ax, label="realism P(natural)")
        ax.set_xscale("log")
    for x, y, marker, label in marks:
        if x > 0 and math.isfinite(x) and math.isfinite(y):
            ax.scatter([x], [y], marker=marker, s=150, c="#d1242f", label=label)
    ax.set_xlabel("prompt perplexity (log)")
    ax.set_ylabel(ylabel)
    ax.set_title(title(name, what), parse_math=False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, frameon=False)
    return png(fig)


def bars_plot(name: str, values: Sequence[float], reference: float, ylabel: str, label: str) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    ax.bar(range(len(values)), [v if math.isfinite(v) else 0.0 for v in values], color="#0969da")
    ax.set_xticks(range(len(values)))
    ax.axhline(reference, color="k", lw=1, ls="--", label=label)
    ax.set_xlabel("test context")
    ax.set_ylabel(ylabel)
    ax.set_title(title(name, "per test context"), parse_math=False)
    ax.legend(fontsize=7)
    return png(fig)


def score_cell(score: Score | None) -> str:
    """A prompt with its test numbers (either axis) and naturalness."""
    if score is None:
        return "–"
    if isinstance(score, ActivationScore):
        numbers = (f"test specific cos {score.value:.2f} · cos {score.cos:.2f} · FVE {fmt(score.fve)}")
    else:
        assert isinstance(score, BehaviorScore)
        numbers = (f"test recovery {fmt(score.value)} · direction cos {fmt(score.direction_cos)} · "
                   f"{fmt(score.effect_ratio)}x the steer's push")
    return (f"<code>{h(score.prompt, multiline=True)}</code><br><span class='muted'>{numbers} · ppl "
            f"{score.perplexity:.0f} · realism {fmt(score.realism)}</span>")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328}
table{border-collapse:collapse;margin:1em 0;width:100%}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top;font-size:14px}th{background:#f6f8fa}.badge{color:#fff;border-radius:10px;
padding:2px 8px;font-size:13px;white-space:nowrap}.vec{border-top:2px solid #d0d7de;margin-top:2em;padding-top:1em}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px}.muted{color:#656d76;font-size:13px}img{max-width:100%}
.plots{display:flex;gap:1em;flex-wrap:wrap}.plots img{max-width:520px}
td,h2,p{overflow-wrap:anywhere}  /* a 100k-character prompt or name wraps instead of widening the page */
"""


