"""Self-contained HTML report (no network): summary table with verdict badges, and per vector the Pareto frontier
(specific cosine vs perplexity) with the null and positive-control bands, per-context cosines, generations side by
side, and the on-manifold share. Plots are matplotlib PNGs embedded as base64.

Names, prompts and generations come from vector files and model output: every one goes through `_h` (control,
bidi-override and surrogate characters made visible, then HTML-escaped); plot titles are cut short and drawn without
mathtext, so a `$` in a name cannot break the plot."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from realize.data.atomic import write_text_atomic
from realize.data.safe_text import printable
from realize.audit_types import PromptScore, VectorAudit

_BADGE = {"realizable": "#1a7f37", "partially realizable": "#9a6700", "not realizable": "#cf222e"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328}
table{border-collapse:collapse;margin:1em 0;width:100%}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top;font-size:14px}th{background:#f6f8fa}.badge{color:#fff;border-radius:10px;
padding:2px 8px;font-size:13px;white-space:nowrap}.vec{border-top:2px solid #d0d7de;margin-top:2em;padding-top:1em}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px}.muted{color:#656d76;font-size:13px}img{max-width:100%}
.plots{display:flex;gap:1em;flex-wrap:wrap}.plots img{max-width:520px}
td,h2,p{overflow-wrap:anywhere}  /* a 100k-character prompt or name wraps instead of widening the page */
"""


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _h(text: str, *, multiline: bool = False) -> str:
    """Untrusted text as HTML: no raw ESC/NUL/CR, no bidi overrides, no markup."""
    return html.escape(printable(text, keep_newlines=multiline))


def _title(name: str, what: str) -> str:
    """A plot title: a name from a file can be 100k characters long (the PNG would be too) or hold control bytes."""
    return f"{printable(name, limit=60)}: {what}"


def _badge(verdict: str | None) -> str:
    if verdict is None:
        return '<span class="badge" style="background:#656d76">control</span>'
    return f'<span class="badge" style="background:{_BADGE[verdict]}">{html.escape(verdict)}</span>'


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _band(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
    return mean - 2 * sd, mean + 2 * sd


def frontier_plot(audit: VectorAudit, null: Sequence[float], positive: Sequence[float]) -> str:
    """Specific cos vs perplexity for every frontier prompt, with null and positive bands."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    if null:
        lo, hi = _band(null)
        ax.axhspan(lo, hi, color="#cf222e", alpha=0.12, label="null (random dirs) ±2sd")
    if positive:
        ax.axhspan(min(positive), max(positive), color="#1a7f37", alpha=0.12, label="positive controls")
    points = [p for p in audit.frontier if p.perplexity > 0 and not math.isnan(p.perplexity)]
    if points:
        scatter = ax.scatter(
            [p.perplexity for p in points],
            [p.specific_cos for p in points],
            c=[p.realism for p in points],
            cmap="viridis",
            vmin=0,
            vmax=1,
            s=28,
            edgecolors="k",
            linewidths=0.3,
        )
        fig.colorbar(scatter, ax=ax, label="realism P(natural)")
        ax.set_xscale("log")
    for score, marker, label in ((audit.best, "*", "best (realism ≥ threshold)"),
                                 (audit.best_unrelated, "D", "best natural prompt (corpus)")):
        if score is not None and score.perplexity > 0:
            ax.scatter([score.perplexity], [score.specific_cos], marker=marker, s=150, c="#d1242f", label=label)
    ax.set_xlabel("prompt perplexity (log)")
    ax.set_ylabel("held-out specific cosine")
    ax.set_title(_title(audit.name, "frontier"), parse_math=False)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, frameon=False)
    return _png(fig)


def per_context_plot(score: PromptScore, name: str) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    values = list(score.per_context_cos)
    ax.bar(range(len(values)), values, color="#0969da")
    ax.set_xticks(range(len(values)))
    ax.axhline(score.cos, color="k", lw=1, ls="--", label=f"mean-shift cos {score.cos:.2f}")
    ax.set_xlabel("held-out context")
    ax.set_ylabel("cos(D_k, a·v)")
    ax.set_title(_title(name, "per-context cosine"), parse_math=False)
    ax.legend(fontsize=7)
    return _png(fig)


def _prompt_cell(score: PromptScore | None) -> str:
    if score is None:
        return "–"
    return (
        f"<code>{_h(score.prompt, multiline=True)}</code><br><span class='muted'>cos {score.cos:.2f} · specific "
        f"{score.specific_cos:.2f} · ppl {score.perplexity:.0f} · realism {score.realism:.2f}</span>"
    )


def _vector_section(audit: VectorAudit, null: Sequence[float], positive: Sequence[float]) -> str:
    parts = [f'<div class="vec" id="{_h(audit.vector_id)}"><h2>{_h(audit.name)} {_badge(audit.verdict)}</h2>']
    cal = audit.calibration
    parts.append(
        f"<p class='muted'>source {_h(audit.source)} · layer {audit.layer} · scale {audit.scale:g} · "
        f"method {_h(audit.method)} · {audit.seconds:.0f} s</p>"
    )
    if cal is not None:
        interval = f" [{_fmt(audit.interval[0])}, {_fmt(audit.interval[1])}]" if audit.interval else ""
        parts.append(
            f"<p>Realizability score <b>{cal.score:.2f}</b>{interval} (0 = random directions, 1 = natural-prompt "
            f"controls); best specific cos {cal.value:.2f}, {cal.z_null:.1f} sd above the null, beats "
            f"{100 * cal.null_percentile:.0f}% of null runs and {100 * cal.positive_percentile:.0f}% of positive controls.</p>"
        )
    parts.append("<table><tr><th>best prompt (realism ≥ threshold)</th><th>best natural prompt from the corpus</th>"
                 "<th>behavior recovery</th><th>on-manifold share</th></tr><tr>")
    behavior = _fmt(audit.behavior_recovery)
    if audit.behavior_interval:
        behavior += f" [{_fmt(audit.behavior_interval[0])}, {_fmt(audit.behavior_interval[1])}]"
    manifold = " · ".join(f"{_h(k)} {v:.2f}" for k, v in audit.manifold.items()) or "–"
    parts.append(f"<td>{_prompt_cell(audit.best)}</td><td>{_prompt_cell(audit.best_unrelated)}</td>"
                 f"<td>{behavior}</td><td>{manifold}</td></tr></table>")
    images = [frontier_plot(audit, null, positive)]
    if audit.best is not None and audit.best.per_context_cos:
        images.append(per_context_plot(audit.best, audit.name))
    parts.append('<div class="plots">' + "".join(f'<img alt="plot" src="{src}">' for src in images) + "</div>")
    if audit.frontier:
        parts.append("<details><summary>frontier prompts</summary><table><tr><th>prompt</th><th>attack</th>"
                     "<th>cos</th><th>specific cos</th><th>ppl</th><th>realism</th></tr>")
        for p in sorted(audit.frontier, key=lambda x: -x.specific_cos):
            parts.append(f"<tr><td><code>{_h(p.prompt, multiline=True)}</code></td><td>{_h(p.attack)}</td>"
                         f"<td>{p.cos:.2f}</td><td>{p.specific_cos:.2f}</td><td>{p.perplexity:.0f}</td>"
                         f"<td>{p.realism:.2f}</td></tr>")
        parts.append("</table></details>")
    if audit.generations:
        parts.append("<table><tr><th>context</th><th>steered</th><th>prompted</th><th>base</th></tr>")
        for g in audit.generations:
            cells = (g.context, g.steered, g.prompted, g.base)
            parts.append("<tr>" + "".join(f"<td>{_h(x, multiline=True)}</td>" for x in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</div>")
    return "\n".join(parts)


def render_report(
    audits: Sequence[VectorAudit],
    *,
    null: Sequence[float],
    positive: Sequence[float],
    title: str = "realize audit",
    settings: str = "",
) -> str:
    """The whole HTML page as a string."""
    rows = []
    for a in audits:
        score = _fmt(a.calibration.score if a.calibration else None)
        best = _h(a.best.prompt, multiline=True) if a.best else "–"
        rows.append(
            f"<tr><td><a href='#{_h(a.vector_id)}'>{_h(a.name)}</a></td><td>{_h(a.kind)}</td>"
            f"<td>{a.layer}</td><td>{_badge(a.verdict)}</td><td>{score}</td>"
            f"<td>{_fmt(a.best.specific_cos if a.best else None)}</td><td><code>{best}</code></td></tr>"
        )
    null_text = f"null best specific cos {sum(null) / len(null):.2f} (n={len(null)})" if null else "no null runs"
    pos_text = f"positive controls {sum(positive) / len(positive):.2f} (n={len(positive)})" if positive else "no positive controls"
    body = "\n".join(_vector_section(a, null, positive) for a in audits)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{_h(title)}</title>
<style>{_CSS}</style></head><body><h1>{_h(title)}</h1>
<p class="muted">{_h(settings)} · {null_text} · {pos_text}</p>
<table><tr><th>vector</th><th>kind</th><th>layer</th><th>verdict</th><th>score</th><th>specific cos</th>
<th>best prompt</th></tr>{''.join(rows)}</table>
{body}
<p class="muted">Specific cosine: both the prompt's mean activation shift and the target a·v are projected orthogonal to
the generic "a prompt is present" direction before the cosine; measured on held-out contexts.</p>
</body></html>"""


def write_report(path: str | os.PathLike[str], page: str) -> None:
    """Write the page atomically."""
    write_text_atomic(path, page)
