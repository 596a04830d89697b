"""Self-contained HTML report (no network): a summary table with every axis's verdict, the controls, and per item one
section per axis, the same on every axis: why, calibration, the content test (the best prompt beside its form
siblings and the unrelated instruction; positives also their own prompt and its siblings), the frontier plot with the
null and positive ranges, per-context values, every evaluated prompt with its own verdict, the prompts the user
suspected (`--prompt`) with theirs; then what only that axis has (activation: magnitude and the per-layer table;
behavior: effect size and the generations side by side). Pieces live in `realize.report_parts`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from realize.data.atomic import write_text_atomic
from realize.evidence import AXES, POSITIVE_KIND, ActivationScore, Axis, AxisEvidence, Judgement, JudgedAudit, VectorAudit
from realize.judging import own_margin
from realize.report_parts import CSS, badge, bars_plot, fmt, h, pair, scatter_plot, score_cell
from realize.verdict import CONTENT_REFERENCES

WHAT: dict[Axis, tuple[str, str]] = {"activation": ("specific cos", "test-context specific cosine"),
                                     "behavior": ("recovery", "test-context behavior recovery")}


def _layers(audit: VectorAudit) -> str:
    return ",".join(map(str, audit.layers))


def _values(audits: Sequence[VectorAudit], axis: Axis) -> list[float]:
    return [v for a in audits if (v := a.value(axis)) is not None]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _judgement_block(judgement: Judgement, axis: Axis) -> str:
    what = WHAT[axis][0]
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


def _content_table(evidence: AxisEvidence, judgement: Judgement) -> str:
    """The best prompt beside what the content test compares it with."""
    rows = [("best prompt (chosen on selection contexts)", evidence.best.score if evidence.best else None)]
    rows += [(f"form sibling {i + 1}", s.score) for i, s in enumerate(evidence.siblings)]
    rows.append(("best unrelated instruction (generic baseline)", evidence.unrelated.score if evidence.unrelated
                 else None))
    rows.append(("best corpus prompt", evidence.best_corpus))
    if evidence.best_search_alone is not None:
        rows.append(("search alone, retrieval off", evidence.best_search_alone))
    if evidence.true_prompt is not None:
        rows.append(("the positive's own prompt", evidence.true_prompt.score))
        rows += [(f"its form sibling {i + 1}", s.score) for i, s in enumerate(evidence.true_siblings)]
    content = judgement.content
    note = "" if content is None else (
        f"<p class='muted'>Content test: <b>{h(content.outcome)}</b>; margin over the form siblings "
        f"{fmt(content.margin)} (the positives' own prompts: {fmt(content.true_margin)}; activation: in the "
        f"whitened metric, where content weighs more than form); unrelated instruction "
        f"{fmt(content.unrelated)} (paired spread {fmt(content.unrelated_spread)})"
        + ("" if content.cosine is None else f"; content cosine {fmt(content.cosine)} (the positives' own prompts: "
           f"{fmt(content.true_cosine)})") + ".</p>")
    body = "".join(f"<tr><td>{h(label)}</td><td>{score_cell(score)}</td></tr>" for label, score in rows)
    return note + f"<table><tr><th>prompt</th><th>test numbers</th></tr>{body}</table>"


def _hypotheses_block(evidence: AxisEvidence, judgement: Judgement) -> str:
    """The prompts the user suspected, each judged as if it were the best (not chosen on the data)."""
    if not evidence.hypotheses:
        return ""
    rows = []
    for hyp, verdict in zip(evidence.hypotheses, judgement.hypotheses, strict=True):
        siblings = ", ".join(fmt(s.score.value) for s in hyp.siblings) or "–"
        rows.append(f"<tr><td><code>{h(hyp.measured.score.prompt, multiline=True)}</code></td><td>"
                    f"{badge(verdict.verdict)} {verdict.stability:.2f}</td><td>{h(verdict.reason)}</td>"
                    f"<td>{score_cell(hyp.measured.score)}</td><td>{siblings}</td></tr>")
    return ("<p><b>Your prompts</b> (given with <code>--prompt</code>; each judged as if it were the best prompt, by "
            "the same rules against the same controls; not chosen on any context, so the controls' searched best "
            "prompts make the comparison conservative)</p><table><tr><th>prompt</th><th>verdict, stability</th>"
            "<th>why</th><th>test numbers</th><th>its form siblings (test)</th></tr>" + "".join(rows) + "</table>")


def _magnitude_block(audit: VectorAudit) -> str:
    mag = audit.magnitude
    text = (f"<p class='muted'>Magnitude: |a·v| without g = {mag.steer_norm:.2f} against natural per-position shift "
            f"norms at this layer (median {mag.natural_p50:.2f}, p99 {mag.natural_p99:.2f}): k = <b>{mag.factor:.2f}"
            f"</b>; realizable scale a* = {mag.realizable_scale:.3g} (file scale {mag.scale:g}); FVE of the best "
            f"prompt {fmt(mag.fve)}; strength |a·v_i| / residual norm "
            f"{', '.join(f'{s:.3f}' for s in audit.strength)}.</p>")
    manifold = " · ".join(f"{h(k)} {v:.2f}" for k, v in audit.manifold.items())
    if manifold:
        text += f"<p class='muted'>On-manifold share: {manifold}</p>"
    if len(audit.layers) < 2:
        return text
    rows = {i: [f"{norm:.2f}", f"{p99:.2f}", f"{k:.2f}"] for i, norm, p99, k in mag.per_layer}
    best = audit.axes["activation"].best
    if best is not None and isinstance(best.score, ActivationScore):
        for i, cos, specific, ratio in best.score.per_layer:
            rows.setdefault(i, ["–"] * 3).extend([f"{cos:.2f}", f"{specific:.2f}", f"{ratio:.2f}"])
    body = "".join(f"<tr><td>{i}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                   for i, cells in sorted(rows.items()))
    return text + ("<table><tr><th>layer</th><th>|a·v_i| without g</th><th>natural p99</th><th>k</th><th>test cos"
                   "</th><th>test specific cos</th><th>norm ratio</th></tr>" + body + "</table>")


def _behavior_block(evidence: AxisEvidence) -> str:
    facts = evidence.behavior
    if facts is None:
        return ""
    parts = [f"<p class='muted'>The steer moves the outputs by {facts.effect:.3f} nats per token (KL steered || base "
             f"along its own text on test contexts){'; <b>inert</b>' if facts.inert else ''}; |a·v| "
             f"{facts.steer_norm:.2f}"
             + (f"; distilled: KL {facts.distill_losses[0]:.3f} -> {facts.distill_losses[1]:.3f} nats/token"
                if facts.distill_losses else "") + ".</p>"]
    if facts.activation_prompt is not None:
        parts.append(f"<p class='muted'>The activation axis's best prompt here: "
                     f"{score_cell(facts.activation_prompt)}</p>")
    if facts.generations:
        parts.append("<table><tr><th>test context</th><th>steered (vector)</th><th>prompted (best prompt)</th>"
                     "<th>base</th></tr>")
        for g in facts.generations:
            cells = (g.context, g.steered, g.prompted, g.base)
            parts.append("<tr>" + "".join(f"<td>{h(x, multiline=True)}</td>" for x in cells) + "</tr>")
        parts.append("</table>")
    return "".join(parts)


def _frontier(audit: VectorAudit, axis: Axis, judgement: Judgement, null: Sequence[float],
              positive: Sequence[float]) -> str:
    """The frontier plot, the best prompt's per-context bars, and every evaluated prompt with its own verdict."""
    evidence = audit.axes[axis]
    what, ylabel = WHAT[axis]
    marks = [(s.perplexity, s.value, m, label) for s, m, label in
             ((evidence.best.score if evidence.best else None, "*", "best (chosen on selection contexts)"),
              (evidence.best_corpus, "D", "best corpus")) if s is not None]
    images = [scatter_plot(audit.name, f"{axis} frontier", [(p.perplexity, p.value, p.realism)
                                                           for p in evidence.frontier], marks, null, positive, ylabel)]
    best = evidence.best.score if evidence.best else None
    if best is not None and best.per_context:
        images.append(bars_plot(audit.name, best.per_context, best.value, f"{what} per context",
                                f"value {best.value:.2f}"))
    parts = ['<div class="plots">' + "".join(f'<img alt="plot" src="{src}">' for src in images) + "</div>"]
    if evidence.frontier:
        parts.append(f"<details><summary>every evaluated prompt ({axis})</summary><table><tr><th>prompt</th>"
                     f"<th>attack</th><th>selection {what}</th><th>test {what}</th><th>ppl</th><th>realism</th>"
                     "<th>its own verdict (selection numbers)</th></tr>")
        order = sorted(range(len(evidence.frontier)), key=lambda k: -evidence.frontier[k].selection)
        for i in order:
            p = evidence.frontier[i]
            verdict = judgement.prompt_verdicts[i] if i < len(judgement.prompt_verdicts) else ""
            parts.append(f"<tr><td><code>{h(p.prompt, multiline=True)}</code></td><td>{h(p.attack)}</td>"
                         f"<td>{fmt(p.selection)}</td><td>{fmt(p.value)}</td><td>{p.perplexity:.0f}</td>"
                         f"<td>{p.realism:.2f}</td><td>{h(verdict)}</td></tr>")
        parts.append("</table></details>")
    return "".join(parts)


def _item_section(judged: JudgedAudit, pool: Sequence[VectorAudit]) -> str:
    audit = judged.audit
    badges = " ".join(f"{axis}: {badge(j.verdict)}" for axis, j in judged.judgements.items())
    nearest = (f" · nearest retrieval prompt kept: \"{h(audit.nearest_corpus[0])}\" ({audit.nearest_corpus[1]:.2f})"
               if audit.nearest_corpus else "")
    source = f" · file sha256 {h(audit.source_sha256[:16])}" if audit.source_sha256 else ""
    parts = [f'<div class="vec" id="{h(audit.vector_id)}"><h2>{h(audit.name)}</h2><p>{badges}</p>',
             f"<p class='muted'>{h(audit.kind)} · source {h(audit.source)}{source} · operation: add a·v at block "
             f"output · layer(s) {_layers(audit)} · scale {audit.scale:g} · method {h(audit.method)}{nearest} · "
             f"{audit.seconds:.0f} s</p>"]
    for axis, judgement in judged.judgements.items():
        evidence = audit.axes[axis]
        null = _values([a for a in pool if a.kind == "null"], axis)
        positive = _values([a for a in pool if a.kind == POSITIVE_KIND[axis]], axis)
        parts.append(_judgement_block(judgement, axis))
        if axis == "activation":
            parts.append(_magnitude_block(audit))
        parts.append(_content_table(evidence, judgement))
        parts.append(_hypotheses_block(evidence, judgement))
        parts.append(_frontier(audit, axis, judgement, null, positive))
        parts.append(_behavior_block(evidence))
    parts.append("</div>")
    return "\n".join(parts)


def _controls_table(audits: Sequence[VectorAudit]) -> str:
    """Per layer and axis: the controls' test values (what every verdict of the layer is placed between)."""
    rows = []
    kinds: tuple[tuple[Axis, str, str], ...] = (
        ("activation", "null", "nulls: random directions of the natural shift space (decide)"),
        ("activation", "null-isotropic", "isotropic random directions (reference)"),
        ("activation", "positive", "positives: held-out natural prompts' shifts"),
        ("behavior", "null", "nulls: the same random directions"),
        ("behavior", "behavior-positive", "positives: steers distilled from held-out prompts"))
    for layers in sorted({a.layers for a in audits}):
        pool = [a for a in audits if a.layers == layers]
        for axis, kind, label in kinds:
            items = [a for a in pool if a.kind == kind and axis in a.axes]
            if not items:
                continue
            values = _values(items, axis)
            margins = {reference: [m for a in items if (m := own_margin(a, axis, reference)) is not None]
                       for reference in CONTENT_REFERENCES}
            extra = (f"own prompt over its form siblings: {fmt(_mean(margins['mean']))} (their mean), "
                     f"{fmt(_mean(margins['nearest']))} (the nearest)" if margins["mean"] else "")
            if axis == "behavior":
                effects = [e.behavior.effect for a in items if (e := a.axes[axis]).behavior is not None]
                extra += f"; effect {fmt(_mean(effects), 3)} nats/token"
            norms = sorted({round(a.target_norm, 2) for a in items})
            rows.append(f"<tr><td>{_layers(pool[0])}</td><td>{axis}</td><td>{label}</td><td>{len(items)} "
                        f"({len(values)} with a value)</td><td>{fmt(_mean(values))}</td><td>"
                        f"{fmt(min(values) if values else None)} – {fmt(max(values) if values else None)}</td>"
                        f"<td>{h(', '.join(map(str, norms)))}</td><td>{extra}</td></tr>")
    return ("<table><tr><th>layer</th><th>axis</th><th>controls</th><th>n</th><th>mean test value</th><th>range</th>"
            "<th>norms</th><th>note</th></tr>" + "".join(rows) + "</table>")


def render_report(judged: Sequence[JudgedAudit], *, title: str = "realize audit", settings: str = "") -> str:
    """The whole HTML page as a string."""
    audits = [j.audit for j in judged]
    axes: list[Axis] = [a for a in AXES if any(a in j.judgements for j in judged)]
    rows = []
    for j in judged:
        a = j.audit
        cells = []
        for axis in axes:
            judgement = j.judgement(axis)
            value = a.value(axis)
            cells.append("–" if judgement is None else
                         f"{badge(judgement.verdict)} {judgement.stability:.2f} · {fmt(value)}")
        first = next((a.axes[axis] for axis in axes if axis in a.axes), None)
        best = first.best if first is not None else None
        rows.append(f"<tr><td><a href='#{h(a.vector_id)}'>{h(a.name)}</a></td><td>{h(a.kind)}</td><td>{_layers(a)}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells)
                    + f"<td>{a.magnitude.factor:.2f}</td><td><code>{h(best.score.prompt, multiline=True) if best else '–'}"
                    "</code></td></tr>")
    header = "".join(f"<th>{axis}: verdict, stability, test value</th>" for axis in axes)
    sections = "".join(_item_section(j, [a for a in audits if a.layers == j.audit.layers]) for j in judged)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{h(title)}</title>
<style>{CSS}</style></head><body><h1>{h(title)}</h1>
<p class="muted">{h(settings)}</p>
<table><tr><th>item</th><th>kind</th><th>layer</th>{header}<th>k = a / a*</th><th>best prompt</th></tr>
{''.join(rows)}</table>
<h3>Controls</h3>{_controls_table(audits)}
{sections}
<p class="muted">Activation axis: can a prompt produce the steer's shift at its layer? Specific cosine: the prompt's
mean activation shift and the target a·v, both projected orthogonal to the generic "a prompt is present" direction.
Behavior axis: can a prompt make the model do what the steer does? Recovery: 1 - sum KL(steered || prompted) /
sum KL(steered || base) along the steered model's own text. Content test: the best prompt against its form siblings
(the same template with its content words swapped) and an unrelated instruction. Every number is measured on test
contexts; the best prompts were chosen on separate selection contexts, and the searches saw only their optimization
contexts.</p>
</body></html>"""


def write_report(path: str | os.PathLike[str], page: str) -> None:
    """Write the page atomically."""
    write_text_atomic(path, page)
