"""Self-contained HTML report (no network): a summary table with both axes' verdicts, the controls, and per item a
section per axis: why, calibration, magnitude (activation), effect size and direction (behavior), the best prompts,
the frontier plot with the null and positive ranges, per-context values, every evaluated prompt with its own
verdict, and the steered / prompted / base generations side by side. Pieces live in `realize.report_parts`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from realize.audit_types import Axis, JudgedAudit, Judgement, VectorAudit
from realize.data.atomic import write_text_atomic
from realize.report_parts import (
    CSS,
    badge,
    bars_plot,
    behavior_cell,
    fmt,
    h,
    pair,
    prompt_cell,
    scatter_plot,
)

_POSITIVES = {"activation": "positive", "behavior": "behavior-positive"}


def _layers(audit: VectorAudit) -> str:
    return ",".join(map(str, audit.layers))


def _per_layer_table(audit: VectorAudit) -> str:
    """Several layers: the best prompt's cos, specific cos and norm ratio, and the magnitude, at each layer."""
    if len(audit.layers) < 2:
        return ""
    rows = {i: [f"{norm:.2f}", f"{p99:.2f}", f"{k:.2f}x"] for i, norm, p99, k in audit.magnitude.per_layer}
    if audit.best is not None:
        for i, cos, specific, ratio in audit.best.per_layer:
            rows.setdefault(i, ["–"] * 3).extend([f"{cos:.2f}", f"{specific:.2f}", f"{ratio:.2f}"])
    body = "".join(f"<tr><td>{i}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                   for i, cells in sorted(rows.items()))
    return ("<table><tr><th>layer</th><th>|a·v_i|</th><th>natural p99</th><th>magnitude</th><th>test cos</th>"
            "<th>test specific cos</th><th>norm ratio</th></tr>" + body + "</table>")


def _values(audits: Sequence[VectorAudit], axis: Axis) -> list[float]:
    return [v for a in audits if (v := a.axis_value(axis)) is not None]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _judgement_block(judgement: Judgement, axis: Axis) -> str:
    what = "specific cos" if axis == "activation" else "recovery"
    parts = [f"<p><b>{axis.capitalize()} axis</b> {badge(judgement.verdict)} <b>Why:</b> {h(judgement.reason)}. "
             f"Stability under resampled test contexts: <b>{judgement.stability:.2f}</b>.</p>"]
    cal = judgement.calibration
    if cal is not None:
        parts.append(
            f"<p class='muted'>Score <b>{cal.score:.2f}</b>{pair(judgement.score_interval)} (0 = null mean "
            f"{cal.null_mean:.2f}, n={cal.n_null}; 1 = positive mean {cal.positive_mean:.2f}, n={cal.n_positive}); "
            f"{what} {cal.value:.2f}{pair(judgement.value_interval)}; null prediction bounds {cal.partial_bound:.2f} "
            f"(partial), {cal.realizable_bound:.2f} (realizable).</p>")
    return "".join(parts)


def _at(values: Sequence[str], i: int) -> str:
    return values[i] if i < len(values) else ""


def _evidence(name: str, axis: str, points: Sequence[tuple[float, float, float]],
              marks: Sequence[tuple[float, float, str, str]], null: Sequence[float], positive: Sequence[float],
              ylabel: str, bars: tuple[Sequence[float], float, str, str] | None, columns: Sequence[str],
              rows: Sequence[tuple[str, str, Sequence[str], float, float, str]]) -> str:
    """The frontier plot, the best prompt's per-context bars, and every evaluated prompt with its own verdict
    (rows: prompt, attack, formatted value cells, perplexity, realism, verdict)."""
    images = [scatter_plot(name, f"{axis} frontier", points, marks, null, positive, ylabel)]
    if bars is not None:
        images.append(bars_plot(name, *bars))
    parts = ['<div class="plots">' + "".join(f'<img alt="plot" src="{src}">' for src in images) + "</div>"]
    if rows:
        header = "".join(f"<th>{h(c)}</th>" for c in columns)
        parts.append(f"<details><summary>every evaluated prompt ({axis})</summary><table><tr><th>prompt</th>"
                     f"<th>attack</th>{header}<th>ppl</th><th>realism</th><th>its own verdict</th></tr>")
        for prompt, attack, cells, perplexity, realism, verdict in rows:
            values = "".join(f"<td>{c}</td>" for c in cells)
            parts.append(f"<tr><td><code>{h(prompt, multiline=True)}</code></td><td>{h(attack)}</td>{values}"
                         f"<td>{perplexity:.0f}</td><td>{realism:.2f}</td><td>{h(verdict)}</td></tr>")
        parts.append("</table></details>")
    return "".join(parts)


def _activation_section(judged: JudgedAudit, null: Sequence[float], positive: Sequence[float]) -> str:
    audit, judgement = judged.audit, judged.activation
    assert judgement is not None
    mag = audit.magnitude
    parts = [_judgement_block(judgement, "activation"),
             f"<p class='muted'>Magnitude: |a·v| = {mag.target_norm:.2f} against natural shift norms at this layer "
             f"(median {mag.natural_p50:.2f}, p99 {mag.natural_p99:.2f}): <b>{mag.factor:.2f}x</b> the p99; "
             f"realizable scale a* = {mag.realizable_scale:.3g} (file scale {mag.scale:g}); FVE of the best prompt "
             f"{fmt(mag.fve)}.</p>" + _per_layer_table(audit),
             "<table><tr><th>best prompt (chosen on selection contexts)</th><th>best corpus prompt</th>"
             "<th>search alone, retrieval off (positives)</th><th>its behavior recovery</th>"
             "<th>on-manifold share</th></tr><tr>"]
    activation_prompt = audit.behavior.activation_prompt if audit.behavior is not None else None
    manifold = " · ".join(f"{h(k)} {v:.2f}" for k, v in audit.manifold.items()) or "–"
    parts.append(f"<td>{prompt_cell(audit.best)}</td><td>{prompt_cell(audit.best_unrelated)}</td>"
                 f"<td>{prompt_cell(audit.best_no_retrieval)}</td>"
                 f"<td>{fmt(activation_prompt.recovery) if activation_prompt else '–'}</td><td>{manifold}</td>"
                 "</tr></table>")
    marks = [(s.perplexity, s.specific_cos, m, label) for s, m, label in
             ((audit.best, "*", "best (chosen on selection contexts)"), (audit.best_unrelated, "D", "best corpus"))
             if s is not None]
    best = audit.best
    bars = None if best is None or not best.per_context_cos else (
        best.per_context_cos, best.cos, "cos(D_k, a·v)", f"mean-shift cos {best.cos:.2f}")
    order = sorted(range(len(audit.frontier)), key=lambda k: -audit.frontier[k].selection_specific_cos)
    rows = [(audit.frontier[i], i) for i in order]
    parts.append(_evidence(
        audit.name, "activation", [(p.perplexity, p.specific_cos, p.realism) for p in audit.frontier], marks, null,
        positive, "test-context specific cosine", bars,
        ["selection specific cos", "test cos", "test specific cos", "FVE"],
        [(p.prompt, p.attack, [f"{p.selection_specific_cos:.2f}", f"{p.cos:.2f}", f"{p.specific_cos:.2f}",
                               fmt(p.fve)], p.perplexity, p.realism, _at(judgement.prompt_verdicts, i))
         for p, i in rows]))
    return "\n".join(parts)


def _behavior_section(judged: JudgedAudit, null: Sequence[float], positive: Sequence[float]) -> str:
    audit, judgement, axis = judged.audit, judged.behavior, judged.audit.behavior
    assert judgement is not None and axis is not None
    best = axis.best
    parts = [_judgement_block(judgement, "behavior"),
             f"<p class='muted'>The vector moves the outputs by {axis.effect:.3f} nats per token (KL steered || base "
             f"along its own text on test contexts){'; <b>inert</b>' if axis.inert else ''}; |a·v| "
             f"{axis.vector_norm:.2f}"
             + (f"; distilled: KL {axis.distill_losses[0]:.3f} -> {axis.distill_losses[1]:.3f} nats/token"
                if axis.distill_losses else "") + ".</p>",
             "<table><tr><th>best prompt (chosen on selection contexts)</th><th>best corpus prompt</th>"
             "<th>the activation axis's best prompt</th><th>best unrelated instruction (generic baseline)</th></tr>"
             f"<tr><td>{behavior_cell(axis.best)}</td><td>{behavior_cell(axis.best_unrelated)}</td>"
             f"<td>{behavior_cell(axis.activation_prompt)}</td><td>{behavior_cell(axis.generic)}"
             + ("" if axis.generic is None or best is None else
                f"<br>specific recovery of the best prompt: {fmt(axis.specific(best))}")
             + "</td></tr></table>"]
    marks = [(s.perplexity, s.recovery, m, label) for s, m, label in
             ((axis.best, "*", "best (chosen on selection contexts)"), (axis.best_unrelated, "D", "best corpus"))
             if s is not None]
    bars = None if best is None or not best.per_context else (
        best.per_context, best.recovery, "recovery r_k", f"mean {best.recovery:.2f}")
    order = sorted(range(len(axis.frontier)), key=lambda k: -axis.frontier[k].selection_recovery)
    parts.append(_evidence(
        audit.name, "behavior", [(p.perplexity, p.recovery, p.realism) for p in axis.frontier], marks, null,
        positive, "test-context behavior recovery", bars,
        ["selection recovery", "test recovery", "direction cos", "push vs vector"],
        [(p.prompt, p.attack, [fmt(p.selection_recovery), fmt(p.recovery), fmt(p.direction_cos),
                               f"{fmt(p.effect_ratio)}x"], p.perplexity, p.realism, _at(judgement.prompt_verdicts, i))
         for i in order for p in (axis.frontier[i],)]))
    if axis.generations:
        parts.append("<table><tr><th>test context</th><th>steered (vector)</th><th>prompted (best prompt)</th>"
                     "<th>base</th></tr>")
        for g in axis.generations:
            cells = (g.context, g.steered, g.prompted, g.base)
            parts.append("<tr>" + "".join(f"<td>{h(x, multiline=True)}</td>" for x in cells) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts)


def _item_section(judged: JudgedAudit, pool: Sequence[VectorAudit]) -> str:
    audit = judged.audit
    badges = " ".join(f"{axis}: {badge(j.verdict)}" for axis, j in (("activation", judged.activation),
                                                                    ("behavior", judged.behavior)) if j is not None)
    parts = [f'<div class="vec" id="{h(audit.vector_id)}"><h2>{h(audit.name)}</h2><p>{badges}</p>',
             f"<p class='muted'>{h(audit.kind)} · source {h(audit.source)} · layer(s) {_layers(audit)} · scale "
             f"{audit.scale:g} · method {h(audit.method)} · {audit.seconds:.0f} s</p>"]
    for axis, section in (("activation", _activation_section), ("behavior", _behavior_section)):
        if judged.judgement(axis) is not None:  # type: ignore[arg-type]
            null = _values([a for a in pool if a.kind == "null"], axis)  # type: ignore[arg-type]
            positive = _values([a for a in pool if a.kind == _POSITIVES[axis]], axis)  # type: ignore[arg-type]
            parts.append(section(judged, null, positive))
    parts.append("</div>")
    return "\n".join(parts)


def _controls_table(audits: Sequence[VectorAudit]) -> str:
    """Per layer and axis: the controls' test values (what every verdict of the layer is placed between)."""
    rows = []
    kinds = (("activation", "null", "nulls: natural-shift directions (decide)"),
             ("activation", "null-isotropic", "isotropic random directions (reference)"),
             ("activation", "positive", "positives: held-out natural prompts' shifts"),
             ("behavior", "null", "nulls: the same random directions"),
             ("behavior", "behavior-positive", "positives: vectors distilled from held-out prompts"))
    for layers in sorted({a.layers for a in audits}):
        pool = [a for a in audits if a.layers == layers]
        layer = ",".join(map(str, layers))
        for axis, kind, label in kinds:
            items = [a for a in pool if a.kind == kind and axis in a.axes]
            if not items:
                continue
            values = _values(items, axis)  # type: ignore[arg-type]
            extra = ""
            if kind == "positive":
                alone = [a.best_no_retrieval.specific_cos for a in items if a.best_no_retrieval]
                only = [a.best_unrelated.specific_cos for a in items if a.best_unrelated]
                extra = f"search alone (retrieval off) {fmt(_mean(alone))}; retrieval alone {fmt(_mean(only))}"
            if axis == "behavior":
                effects = [a.behavior.effect for a in items if a.behavior is not None]
                extra = f"effect {fmt(_mean(effects), 3)} nats/token"
            norms = sorted({round(a.target_norm, 2) for a in items})
            rows.append(f"<tr><td>{layer}</td><td>{axis}</td><td>{label}</td><td>{len(items)} ({len(values)} usable)"
                        f"</td><td>{fmt(_mean(values))}</td><td>{fmt(min(values) if values else None)} – "
                        f"{fmt(max(values) if values else None)}</td><td>{h(', '.join(map(str, norms)))}</td>"
                        f"<td>{extra}</td></tr>")
    return ("<table><tr><th>layer</th><th>axis</th><th>controls</th><th>n</th><th>mean test value</th><th>range</th>"
            "<th>norms</th><th>note</th></tr>" + "".join(rows) + "</table>")


def render_report(judged: Sequence[JudgedAudit], *, title: str = "realize audit", settings: str = "") -> str:
    """The whole HTML page as a string."""
    audits = [j.audit for j in judged]
    rows = []
    for j in judged:
        a = j.audit
        cells = []
        for judgement in (j.activation, j.behavior):
            cells.append("–" if judgement is None else f"{badge(judgement.verdict)} {judgement.stability:.2f}")
        best = h(a.best.prompt, multiline=True) if a.best else "–"
        rows.append(f"<tr><td><a href='#{h(a.vector_id)}'>{h(a.name)}</a></td><td>{h(a.kind)}</td><td>{_layers(a)}</td>"
                    f"<td>{cells[0]}</td><td>{cells[1]}</td><td>{fmt(a.value)}</td>"
                    f"<td>{fmt(a.behavior.value if a.behavior else None)}</td><td>{a.magnitude.factor:.2f}x</td>"
                    f"<td><code>{best}</code></td></tr>")
    sections = "".join(_item_section(j, [a for a in audits if a.layers == j.audit.layers]) for j in judged)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{h(title)}</title>
<style>{CSS}</style></head><body><h1>{h(title)}</h1>
<p class="muted">{h(settings)}</p>
<table><tr><th>item</th><th>kind</th><th>layer</th><th>activation verdict, stability</th>
<th>behavior verdict, stability</th><th>test specific cos</th><th>test recovery</th><th>|a·v| / natural p99</th>
<th>best prompt (activation)</th></tr>{''.join(rows)}</table>
<h3>Controls</h3>{_controls_table(audits)}
{sections}
<p class="muted">Activation axis: can a prompt produce the vector's shift at its layer? Specific cosine: the prompt's
mean activation shift and the target a·v, both projected orthogonal to the generic "a prompt is present" direction.
Behavior axis: can a prompt make the model do what the vector does? Recovery: 1 - KL(steered || prompted) /
KL(steered || base) along the steered model's own text. Every number is measured on test contexts; the best prompts
were chosen on separate selection contexts, and the searches saw only their optimization contexts.</p>
</body></html>"""


def write_report(path: str | os.PathLike[str], page: str) -> None:
    """Write the page atomically."""
    write_text_atomic(path, page)
