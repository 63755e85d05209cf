"""The series report of a storyboard run: summary.json and one self-contained report.html.

Built from the ledger (never from memory), so it is the same whether the run went in one go or was
resumed, and can be rebuilt at any time. The HTML needs nothing but a browser, offline: thumbnails are
embedded (base64 JPEG), the identity-drift chart is inline SVG, and every image links to its file in the
run folder (relative links).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from ... import __version__
from ...utils import utc_now, write_bytes_atomic, write_json_atomic
from ..runner import Identity
from .ledger import Ledger
from .plan import Plan

SUMMARY_SCHEMA_ID = "castkeep.storyboard.summary/1"
THUMBNAIL = 256
COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def _adapter_inputs(run_dir: Path, take: Any) -> dict[str, Any] | None:
    """What the adapter was given for the kept take, per character (`{NAME: {variant, identity tokens, CLIP crops'
    hashes, s_scale, ...}}`): its sidecar's `models.adapter_inputs`, the record written with the image (the ledger
    holds the sidecar's hash, not its content). None before the shot has a take, or for a sidecar without one."""
    if take is None:
        return None
    try:
        sidecar = json.loads((run_dir / take.sidecar).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    inputs = (sidecar.get("models") or {}).get("adapter_inputs") if isinstance(sidecar, dict) else None
    return inputs if isinstance(inputs, dict) else None


def _shot_entry(ledger: Ledger, shot: Any) -> dict[str, Any]:
    row = ledger.shot(shot.id)
    attempts = ledger.attempts(shot.id) if row is not None else {}
    kept = row.kept if row is not None else []
    best = attempts.get(kept[0]["attempt"]) if kept else None
    score = best.score if best is not None else None
    flags = list(score["flags"]) if score else []
    state = row.state if row is not None else "pending"
    if state == "error":
        flags.append(f"error: {row.error if row else ''}")
    return {
        "number": shot.number, "id": shot.id, "caption": shot.caption, "prompt": shot.prompt,
        "characters": list(shot.characters), "seed": shot.seed, "state": state,
        "target_met": None if row is None else row.target_met, "rounds": 1 if row is None else row.rounds,
        "attempts": len(attempts), "kept": kept, "score": score, "flags": flags,
        "adapter_inputs": _adapter_inputs(ledger.run_dir, best),
        "takes": [a.file for a in attempts.values()],
        "timing": {"pipeline_s": round(sum(a.pipeline_s for a in attempts.values()), 3),
                   "scoring_s": round(sum(a.scoring_s for a in attempts.values()), 3),
                   "write_s": round(sum(a.write_s for a in attempts.values()), 3),
                   # the session that finished it: pipeline / scoring / castkeep's own work (shot_run.py)
                   "split": None if row is None else row.timing},
    }


def build_summary(plan: Plan, ledger: Ledger, identities: dict[str, Identity]) -> dict[str, Any]:
    shots = [_shot_entry(ledger, shot) for shot in plan.shots]
    table: dict[str, list[float | None]] = {}
    for name in plan.characters:
        row: list[float | None] = []
        for entry in shots:
            judged = (entry["score"] or {}).get("characters", {}).get(name) if name in entry["characters"] else None
            row.append(None if judged is None else judged.get("probability"))
        table[name] = row
    states = [entry["state"] for entry in shots]
    timing = {key: round(sum(entry["timing"][key] for entry in shots), 3) for key in ("pipeline_s", "scoring_s", "write_s")}
    timing["overhead_share_of_pipeline"] = (round(timing["write_s"] / timing["pipeline_s"], 4)
                                            if timing["pipeline_s"] else None)
    return {
        "schema": SUMMARY_SCHEMA_ID, "castkeep_version": __version__, "title": plan.title,
        "updated_at": utc_now(),
        "plan": ledger.meta().get("plan"), "models": ledger.meta().get("models"),
        "characters": [identities[name].to_dict() for name in plan.characters],
        "counts": {"shots": len(shots), "done": states.count("done"), "failed_target": states.count("failed-target"),
                   "error": states.count("error"), "unfinished": sum(s in ("pending", "running") for s in states),
                   "flagged": sum(bool(entry["flags"]) for entry in shots)},
        "shots": shots,
        "table": {"shots": [entry["id"] for entry in shots], "probability": table},
        "flagged": [{"id": entry["id"], "number": entry["number"], "flags": entry["flags"]}
                    for entry in shots if entry["flags"]],
        "timing": timing,
        "sessions": ledger.sessions(),
    }


# ---------------------------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _thumbnail(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = THUMBNAIL / max(image.size)
            if scale < 1:
                image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                     Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def drift_chart(table: dict[str, list[float | None]], labels: list[str], *, width: int = 900, height: int = 260) -> str:
    """Inline SVG: each character's P(same person) over the shots (a gap where it is absent or faceless)."""
    left, right, top, bottom = 40, 120, 12, 40
    count = max(1, len(labels))
    x_step = (width - left - right) / max(1, count - 1)

    def x(i: int) -> float:
        return left + (i * x_step if count > 1 else (width - left - right) / 2)

    def y(p: float) -> float:
        return top + (1 - p) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="identity drift over the series">']
    for p in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(p):.1f}" y2="{y(p):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(p) + 4:.1f}" font-size="11" text-anchor="end">{p:g}</text>')
    step = max(1, count // 20)
    for i, label in enumerate(labels):
        if i % step == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" font-size="10" text-anchor="middle">'
                         f'{_e(label[:12])}</text>')
    for index, (name, values) in enumerate(table.items()):
        colour = COLOURS[index % len(COLOURS)]
        segment: list[str] = []
        segments = [segment]
        for i, value in enumerate(values):
            if value is None:
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{x(i):.1f},{y(value):.1f}")
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="3" fill="{colour}">'
                         f'<title>{_e(name)} · {_e(labels[i])}: {value:.2f}</title></circle>')
        for points in segments:
            if len(points) > 1:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>')
        parts.append(f'<text x="{width - right + 8}" y="{top + 14 + 16 * index}" font-size="12" fill="{colour}">'
                     f'{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell(value: float | None, present: bool) -> str:
    if not present:
        return "<td class=na></td>"
    if value is None:
        return '<td class=bad title="no face">no face</td>'
    hue = round(120 * value)  # red (0) to green (1)
    return f'<td style="background:hsl({hue},60%,85%)">{value:.2f}</td>'


def _verdicts(score: dict[str, Any] | None) -> str:
    if not score:
        return "<p class=muted>not generated yet</p>"
    rows = []
    for name, judged in score["characters"].items():
        verdicts = ", ".join(f"{scorer} {v['probability']:.2f} {'✓' if v['same'] else '✗'}"
                             for scorer, v in (judged.get("scores") or {}).items())
        region = f" [{_e(judged['region'])}]" if judged.get("region") else ""
        rows.append(f"<li><b>{_e(name)}</b>{region}: {verdicts if judged['face_found'] else 'no face found'}</li>")
    return "<ul>" + "".join(rows) + "</ul>"


STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{margin:0 0 4px}.muted{color:#777}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:center}
td.na{background:#f4f4f4}td.bad{background:#f8c4c4}.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{width:270px;border:1px solid #ddd;border-radius:6px;padding:7px}.card img{max-width:256px;display:block}
.flag{color:#b00;font-weight:600}.card ul{padding-left:16px;margin:4px 0}.state-done{color:#080}
.state-failed-target,.state-error{color:#b00}"""


def render_html(summary: dict[str, Any], run_dir: Path) -> str:
    shots = summary["shots"]
    labels = summary["table"]["shots"]
    table = summary["table"]["probability"]
    counts = summary["counts"]
    head = (f"<h1>{_e(summary['title'])}</h1><p class=muted>{counts['shots']} shots: {counts['done']} done, "
            f"{counts['failed_target']} below target, {counts['error']} errors, {counts['unfinished']} unfinished · "
            f"castkeep {_e(summary['castkeep_version'])} · {_e(summary['updated_at'])} · "
            f"<a href='summary.json'>summary.json</a></p>")
    flagged = "".join(f"<li><a href='#shot-{_e(f['id'])}'>{f['number']}. {_e(f['id'])}</a>: "
                      f"<span class=flag>{_e('; '.join(f['flags']))}</span></li>" for f in summary["flagged"])
    flagged_html = f"<h2>Flagged shots</h2><ul>{flagged}</ul>" if flagged else "<h2>Flagged shots</h2><p>none</p>"
    header = "".join(f"<th><a href='#shot-{_e(label)}'>{_e(label)}</a></th>" for label in labels)
    body = "".join(f"<tr><th>{_e(name)}</th>" + "".join(_cell(value, name in shot["characters"])
                                                          for value, shot in zip(values, shots, strict=True)) + "</tr>"
                   for name, values in table.items())
    score_table = f"<h2>Character × shot: P(same person)</h2><table><tr><th></th>{header}</tr>{body}</table>"
    cards = []
    for shot in shots:
        kept = shot["kept"][0] if shot["kept"] else None
        thumb = _thumbnail(run_dir / kept["file"]) if kept else None
        image = (f"<a href='{_e(kept['file'])}'><img src='{thumb}' alt='{_e(shot['id'])}'></a>" if kept and thumb
                 else "<p class=muted>no image</p>")
        links = " ".join(f"<a href='{_e(k['file'])}'>png</a> <a href='{_e(k['sidecar'])}'>json</a>" for k in shot["kept"])
        takes = " ".join(f"<a href='{_e(t)}'>{i}</a>" for i, t in enumerate(shot["takes"]))
        flags = f"<p class=flag>{_e('; '.join(shot['flags']))}</p>" if shot["flags"] else ""
        cards.append(
            f"<div class=card id='shot-{_e(shot['id'])}'>{image}<b>{shot['number']}. {_e(shot['id'])}</b> "
            f"<span class='state-{_e(shot['state'])}'>{_e(shot['state'])}</span><br>"
            f"<span class=muted>{_e(shot['caption'] or shot['prompt'])}</span><br>seed {shot['seed']} · "
            f"{shot['attempts']} take(s){_verdicts(shot['score'])}{flags}{links}"
            f"{'<br>takes: ' + takes if takes else ''}</div>")
    chart = f"<h2>Identity drift over the series</h2>{drift_chart(table, labels)}"
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{_e(summary['title'])} · castkeep</title>"
            f"<style>{STYLE}</style><body>{head}{flagged_html}{score_table}{chart}<h2>Shots</h2>"
            f"<div class=grid>{''.join(cards)}</div></body></html>")


def write_report(run_dir: Path, plan: Plan, ledger: Ledger, identities: dict[str, Identity]
                 ) -> tuple[Path, Path, dict[str, Any]]:
    summary = build_summary(plan, ledger, identities)
    summary_path = write_json_atomic(run_dir / "summary.json", summary)
    report_path = write_bytes_atomic(run_dir / "report.html", render_html(summary, run_dir).encode("utf-8"))
    return summary_path, report_path, summary
