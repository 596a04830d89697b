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

from realize.audit_types import JudgedAudit, PromptScore, VectorAudit
from realize.data.atomic import write_text_atomic
from realize.data.safe_text import printable

_BADGE = {"realizable": "#1a7f37", "partially realizable": "#9a6700", "direction realizable": "#8250df",
          "direction partially realizable": "#8250df", "not realizable": "#cf222e", "inconclusive": "#656d76",
          "no natural candidate": "#57606a"}
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


def _badge(verdict: str) -> str:
    return f'<span class="badge" style="background:{_BADGE.get(verdict, "#656d76")}">{html.escape(verdict)}</span>'


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _pair(pair: tuple[float, float] | None) -> str:
    return f" [{_fmt(pair[0])}, {_fmt(pair[1])}]" if pair else ""


def _values(audits: Sequence[VectorAudit]) -> list[float]:
    return [a.value for a in audits if a.value is not None]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def frontier_plot(audit: VectorAudit, null: Sequence[float], positive: Sequence[float]) -> str:
    """Test specific cos vs perplexity for every evaluated prompt, with the null and positive ranges."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    if null:
        ax.axhspan(min(null), max(null), color="#cf222e", alpha=0.12, label="nulls (natural-shift directions)")
    if positive:
        ax.axhspan(min(positive), max(positive), color="#1a7f37", alpha=0.12, label="positive controls")
    points = [p for p in audit.frontier if p.perplexity > 0 and math.isfinite(p.perplexity)]
    if points:
        scatter = ax.scatter([p.perplexity for p in points], [p.specific_cos for p in points],
                             c=[p.realism for p in points], cmap="viridis", vmin=0, vmax=1, s=28, edgecolors="k",
                             linewidths=0.3)
        fig.colorbar(scatter, ax=ax, label="realism P(natural)")
        ax.set_xscale("log")
    for score, marker, label in ((audit.best, "*", "best (chosen on selection contexts)"),
                                 (audit.best_unrelated, "D", "best corpus prompt")):
        if score is not None and score.perplexity > 0:
            ax.scatter([score.perplexity], [score.specific_cos], marker=marker, s=150, c="#d1242f", label=label)
    ax.set_xlabel("prompt perplexity (log)")
    ax.set_ylabel("test-context specific cosine")
    ax.set_title(_title(audit.name, "frontier"), parse_math=False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, frameon=False)
    return _png(fig)


def per_context_plot(score: PromptScore, name: str) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    values = list(score.per_context_cos)
    ax.bar(range(len(values)), values, color="#0969da")
    ax.set_xticks(range(len(values)))
    ax.axhline(score.cos, color="k", lw=1, ls="--", label=f"mean-shift cos {score.cos:.2f}")
    ax.set_xlabel("test context")
    ax.set_ylabel("cos(D_k, a·v)")
    ax.set_title(_title(name, "per-context cosine"), parse_math=False)
    ax.legend(fontsize=7)
    return _png(fig)


def _prompt_cell(score: PromptScore | None) -> str:
    if score is None:
        return "–"
    return (
        f"<code>{_h(score.prompt, multiline=True)}</code><br><span class='muted'>test cos {score.cos:.2f} · "
        f"specific {score.specific_cos:.2f} · FVE {_fmt(score.fve)} · ppl {score.perplexity:.0f} · realism "
        f"{score.realism:.2f}</span>"
    )


def _behavior_cell(audit: VectorAudit) -> str:
    if audit.behavior is None:
        return "–"
    b = audit.behavior
    text = f"{_fmt(b.recovery)}{_pair(b.interval)}<br><span class='muted'>effect {b.effect_kl:.3f} nats/token"
    if b.inert:
        text += " · <b>inert</b>: the vector barely changes the outputs, recovery is not meaningful"
    if audit.behavior_unrelated is not None:
        text += f" · best corpus prompt: {_fmt(audit.behavior_unrelated.recovery)}"
    return text + "</span>"


def _vector_section(judged: JudgedAudit, null: Sequence[float], positive: Sequence[float]) -> str:
    audit, judgement = judged.audit, judged.judgement
    parts = [f'<div class="vec" id="{_h(audit.vector_id)}"><h2>{_h(audit.name)} {_badge(judgement.verdict)}</h2>',
             f"<p class='muted'>source {_h(audit.source)} · layer {audit.layer} · scale {audit.scale:g} · "
             f"method {_h(audit.method)} · {audit.seconds:.0f} s</p>",
             f"<p><b>Why:</b> {_h(judgement.reason)}. Verdict stability under resampled test contexts: "
             f"<b>{judgement.stability:.2f}</b>.</p>"]
    cal = judgement.calibration
    if cal is not None:
        parts.append(
            f"<p>Realizability score <b>{cal.score:.2f}</b>{_pair(judgement.score_interval)} (0 = null mean "
            f"{cal.null_mean:.2f}, n={cal.n_null}; 1 = positive mean {cal.positive_mean:.2f}, n={cal.n_positive}); "
            f"null prediction bounds: {cal.partial_bound:.2f} (partial), {cal.realizable_bound:.2f} (realizable); "
            f"beats {100 * cal.null_percentile:.0f}% of nulls and {100 * cal.positive_percentile:.0f}% of "
            f"positives.</p>")
    mag = audit.magnitude
    parts.append(
        f"<p>Magnitude: |a·v| = {mag.target_norm:.2f} against natural shift norms at this layer (median "
        f"{mag.natural_p50:.2f}, p99 {mag.natural_p99:.2f}): <b>{mag.factor:.2f}x</b> the p99; realizable scale "
        f"a* = {mag.realizable_scale:.3g} (file scale {mag.scale:g}); FVE of the best prompt {_fmt(mag.fve)}.</p>")
    parts.append("<table><tr><th>best prompt (chosen on selection contexts)</th><th>best corpus prompt</th>"
                 "<th>search alone, retrieval off (positives)</th><th>behavior recovery</th><th>on-manifold share</th></tr><tr>")
    manifold = " · ".join(f"{_h(k)} {v:.2f}" for k, v in audit.manifold.items()) or "–"
    parts.append(f"<td>{_prompt_cell(audit.best)}</td><td>{_prompt_cell(audit.best_unrelated)}</td>"
                 f"<td>{_prompt_cell(audit.best_no_retrieval)}</td><td>{_behavior_cell(audit)}</td>"
                 f"<td>{manifold}</td></tr></table>")
    images = [frontier_plot(audit, null, positive)]
    if audit.best is not None and audit.best.per_context_cos:
        images.append(per_context_plot(audit.best, audit.name))
    parts.append('<div class="plots">' + "".join(f'<img alt="plot" src="{src}">' for src in images) + "</div>")
    if audit.frontier:
        verdicts = dict(zip(range(len(audit.frontier)), judgement.prompt_verdicts, strict=False))
        parts.append("<details><summary>every evaluated prompt</summary><table><tr><th>prompt</th><th>attack</th>"
                     "<th>selection specific cos</th><th>test cos</th><th>test specific cos</th><th>FVE</th>"
                     "<th>ppl</th><th>realism</th><th>its own verdict</th></tr>")
        for i in sorted(range(len(audit.frontier)), key=lambda k: -audit.frontier[k].selection_specific_cos):
            p = audit.frontier[i]
            parts.append(f"<tr><td><code>{_h(p.prompt, multiline=True)}</code></td><td>{_h(p.attack)}</td>"
                         f"<td>{p.selection_specific_cos:.2f}</td><td>{p.cos:.2f}</td><td>{p.specific_cos:.2f}</td>"
                         f"<td>{_fmt(p.fve)}</td><td>{p.perplexity:.0f}</td><td>{p.realism:.2f}</td>"
                         f"<td>{_h(verdicts.get(i, ''))}</td></tr>")
        parts.append("</table></details>")
    if audit.generations:
        parts.append("<table><tr><th>context</th><th>steered</th><th>prompted</th><th>base</th></tr>")
        for g in audit.generations:
            cells = (g.context, g.steered, g.prompted, g.base)
            parts.append("<tr>" + "".join(f"<td>{_h(x, multiline=True)}</td>" for x in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</div>")
    return "\n".join(parts)


def _controls_table(audits: Sequence[VectorAudit]) -> str:
    """Per layer: the controls' test values (what every verdict of the layer is placed between)."""
    rows = []
    for layer in sorted({a.layer for a in audits}):
        pool = [a for a in audits if a.layer == layer]
        for kind, label in (("null", "nulls: natural-shift directions (decide)"),
                            ("null-isotropic", "isotropic random directions (reference)"),
                            ("positive", "positives: held-out natural prompts")):
            items = [a for a in pool if a.kind == kind]
            if not items:
                continue
            values = _values(items)
            extra = ""
            if kind == "positive":
                no_retrieval = [a.best_no_retrieval.specific_cos for a in items if a.best_no_retrieval]
                only = [a.best_unrelated.specific_cos for a in items if a.best_unrelated]
                extra = (f"search alone (retrieval off) {_fmt(_mean(no_retrieval))}; retrieval alone "
                         f"{_fmt(_mean(only))}")
            norms = sorted({round(a.target_norm, 2) for a in items})
            rows.append(f"<tr><td>{layer}</td><td>{label}</td><td>{len(items)} ({len(values)} usable)</td>"
                        f"<td>{_fmt(_mean(values))}</td><td>{_fmt(min(values) if values else None)} – "
                        f"{_fmt(max(values) if values else None)}</td><td>{_h(', '.join(map(str, norms)))}</td>"
                        f"<td>{extra}</td></tr>")
    return ("<table><tr><th>layer</th><th>controls</th><th>n</th><th>mean test specific cos</th><th>range</th>"
            "<th>norms</th><th>note</th></tr>" + "".join(rows) + "</table>")


def render_report(judged: Sequence[JudgedAudit], *, title: str = "realize audit", settings: str = "") -> str:
    """The whole HTML page as a string."""
    audits = [j.audit for j in judged]
    rows = []
    for j in judged:
        a, cal = j.audit, j.judgement.calibration
        best = _h(a.best.prompt, multiline=True) if a.best else "–"
        rows.append(
            f"<tr><td><a href='#{_h(a.vector_id)}'>{_h(a.name)}</a></td><td>{_h(a.kind)}</td>"
            f"<td>{a.layer}</td><td>{_badge(j.judgement.verdict)}</td><td>{j.judgement.stability:.2f}</td>"
            f"<td>{_fmt(cal.score if cal else None)}</td><td>{_fmt(a.value)}</td><td>{a.magnitude.factor:.2f}x</td>"
            f"<td><code>{best}</code></td></tr>"
        )
    sections = []
    for j in judged:
        pool = [a for a in audits if a.layer == j.audit.layer]
        null = _values([a for a in pool if a.kind == "null"])
        positive = _values([a for a in pool if a.kind == "positive"])
        sections.append(_vector_section(j, null, positive))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{_h(title)}</title>
<style>{_CSS}</style></head><body><h1>{_h(title)}</h1>
<p class="muted">{_h(settings)}</p>
<table><tr><th>vector</th><th>kind</th><th>layer</th><th>verdict</th><th>stability</th><th>score</th>
<th>test specific cos</th><th>magnitude / natural p99</th><th>best prompt</th></tr>{''.join(rows)}</table>
<h3>Controls</h3>{_controls_table(audits)}
{''.join(sections)}
<p class="muted">Specific cosine: the prompt's mean activation shift and the target a·v, both projected orthogonal to
the generic "a prompt is present" direction. Every number is measured on test contexts; the best prompt was chosen on
separate selection contexts, and the search saw only its optimization contexts.</p>
</body></html>"""


def write_report(path: str | os.PathLike[str], page: str) -> None:
    """Write the page atomically."""
    write_text_atomic(path, page)
