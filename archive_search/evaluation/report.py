"""Markdown reports and PNG plots (DET curves, score histograms) of evaluations.

matplotlib is imported only when a plot is drawn (the Agg backend, no screen needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from archive_search.evaluation.harness import Evaluation, SystemRun
from archive_search.evaluation.metrics import Curve, twv_curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- search evaluation


def plot_det(evaluation: Evaluation, path: str | Path, groups: Sequence[str] = ("text", "spoken")) -> Path | None:
    """Miss rate against false alarms per term per hour, one line per system and query kind."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 5))
    drawn = 0
    styles = {"text": "-", "spoken": "--"}
    for run in evaluation.systems:
        if run.skipped:
            continue
        for group in groups:
            present = [r.alignment for r in run.runs if group in r.query.groups() and r.alignment.n_true > 0]
            if not present:
                continue
            curve = twv_curve(present, evaluation.speech_seconds)
            x = np.maximum(curve.fa_per_hour, 1e-2)  # log axis: nothing-accepted sits at the left edge
            axis.step(x, curve.miss_rate, where="post", linestyle=styles.get(group, ":"), label=f"{run.name} ({group})")
            drawn += 1
    if not drawn:
        plt.close(figure)
        return None
    axis.set_xscale("log")
    axis.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("false alarms per term per hour")
    axis.set_ylabel("miss rate")
    axis.set_ylim(0, 1.02)
    axis.set_title("DET: miss rate vs false alarm rate (dotted: 1 FA/h)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def plot_score_histograms(evaluation: Evaluation, path: str | Path) -> Path | None:
    """Per system: scores of hits and of false alarms (absent terms included), and its threshold."""
    plt = _pyplot()
    runs = [r for r in evaluation.systems if not r.skipped and r.runs]
    if not runs:
        return None
    figure, axes = plt.subplots(len(runs), 1, figsize=(7, 2.6 * len(runs)), squeeze=False)
    for axis, run in zip(axes[:, 0], runs):
        hits = np.concatenate([r.alignment.scores[r.alignment.correct] for r in run.runs] + [np.zeros(0)])
        false = np.concatenate([r.alignment.scores[~r.alignment.correct] for r in run.runs] + [np.zeros(0)])
        every = np.r_[hits, false]
        low, high = (float(every.min()), float(every.max())) if every.size else (0.0, 1.0)
        bins = np.linspace(low, high if high > low else low + 1.0, 31)
        axis.hist(false, bins=bins, alpha=0.6, color="tab:red", label=f"false alarms ({false.size})")
        axis.hist(hits, bins=bins, alpha=0.6, color="tab:green", label=f"hits ({hits.size})")
        if run.threshold is not None:
            axis.axvline(run.threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {run.threshold:g}")
        axis.set_title(run.name)
        axis.set_xlabel("score")
        axis.set_ylabel("detections (log)")
        axis.set_yscale("log")  # hits are few next to false alarms: keep both visible
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def search_report(evaluation: Evaluation, title: str = "Search evaluation", command: str | None = None, plots: dict[str, str] | None = None) -> str:
    """The markdown report of a search evaluation."""
    queries = evaluation.queries
    kinds: dict[str, int] = {}
    for query in queries:
        key = "absent" if query.absent else f"{query.kind}/{query.length}" + ("" if query.vocabulary == "n/a" else f"/{query.vocabulary}")
        kinds[key] = kinds.get(key, 0) + 1
    parts = [f"# {title}", ""]
    if command:
        parts += ["```", command, "```", ""]
    parts += [
        f"{evaluation.corpus_files} files, {evaluation.speech_seconds / 3600:.2f} h of speech; {len(queries)} queries: "
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
        "",
        "ATWV is at each system's own threshold, MTWV at the best one (NIST STD 2006, β = 999.9, a detection",
        "counts when its midpoint is within 0.5 s of an occurrence). Miss rate at 1 FA/h is pooled over occurrences",
        "with false alarms counted per term per hour. FA counts are at the system's threshold.",
        "",
        "## Systems",
        "",
    ]
    rows = []
    for run in evaluation.systems:
        if run.skipped:
            rows.append([run.name, "skipped", "-", "-", "-", run.skipped])
        else:
            speed = f"{run.speed:.1f}x" if run.index_seconds > 0 else "-"
            cpu = run.index_cpu_seconds
            per_cpu = f"{run.audio_seconds / cpu:.1f}x" if cpu and run.index_seconds > 0 else "-"
            rows.append([run.name, _fmt(run.threshold), speed, _fmt(run.index_seconds, 1), per_cpu, run.note])
    parts += [markdown_table(["system", "threshold", "indexing speed (x real time, wall)", "index s", "audio s per CPU s", "note"], rows), ""]
    parts += ["## Results", ""]
    header = ["queries", "system", "n", "occ.", "ATWV", "MTWV", "MTWV θ", "MAP", "P@5", "miss@1FA/h", "FA", "FA/term/h", "p50 ms", "p95 ms"]
    rows = []
    for group in dict.fromkeys(s.group for s in evaluation.summaries):
        for s in (s for s in evaluation.summaries if s.group == group):
            rows.append([group, s.system, s.n_queries, s.n_occurrences, s.atwv, s.mtwv, s.mtwv_threshold, s.map, s.p_at_5,
                         s.miss_at_1fa_per_hour, s.false_alarms, s.false_alarms_per_hour, s.latency_p50_ms, s.latency_p95_ms])  # fmt: skip
    parts += [markdown_table(header, rows), ""]
    parts += comparison(evaluation)
    errors = [(run.name, r.query.text, r.error) for run in evaluation.systems for r in run.runs if r.error]
    if errors:
        parts += ["## Query errors", ""] + [f"- {name}: `{text}`: {error}" for name, text, error in errors[:20]] + [""]
    if plots:
        parts += ["## Plots", ""] + [f"![{name}]({file})" for name, file in plots.items()] + [""]
    return "\n".join(parts)


def comparison(evaluation: Evaluation, reference: str = "engine", margin: float = 0.005) -> list[str]:
    """Lines saying plainly where a peer beats the engine (MTWV, MAP, indexing speed)."""
    runs = {r.name: r for r in evaluation.systems if not r.skipped}
    if reference not in runs or len(runs) < 2:
        return []
    lines = []
    for group in dict.fromkeys(s.group for s in evaluation.summaries):
        ours = evaluation.summary(reference, group)
        if ours is None or ours.mtwv is None:
            continue
        for other in (s for s in evaluation.summaries if s.group == group and s.system != reference):
            if other.mtwv is not None and other.mtwv > ours.mtwv + margin:
                lines.append(f"- `{group}`: **{other.system}** MTWV {other.mtwv:.3f} > engine {ours.mtwv:.3f}")
            elif other.map is not None and ours.map is not None and other.map > ours.map + margin:
                lines.append(f"- `{group}`: **{other.system}** MAP {other.map:.3f} > engine {ours.map:.3f} (MTWV not higher)")
    engine_run = runs[reference]
    for run in runs.values():
        if run.name != reference and run.index_seconds > 0 and engine_run.index_seconds > 0 and run.speed > engine_run.speed:
            lines.append(f"- indexing: **{run.name}** {run.speed:.1f}x real time > engine {engine_run.speed:.1f}x")
    absent = {s.system: s for s in evaluation.summaries if s.group == "absent"}
    if reference in absent:
        for name, row in absent.items():
            if name != reference and row.false_alarms < absent[reference].false_alarms and runs[name].threshold is not None:
                lines.append(f"- absent terms: **{name}** {row.false_alarms} false alarms < engine {absent[reference].false_alarms}")
    return ["## Where a peer beats the engine", ""] + (lines or ["- nowhere in this run"]) + [""]


def write_search_report(evaluation: Evaluation, out: str | Path, title: str = "Search evaluation", command: str | None = None) -> Path:
    """report.md, results.json, det.png and scores.png in `out`; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    if plot_det(evaluation, out / "det.png"):
        plots["DET curves"] = "det.png"
    if plot_score_histograms(evaluation, out / "scores.png"):
        plots["score histograms"] = "scores.png"
    (out / "results.json").write_text(json.dumps(clean_json(evaluation.to_dict()), indent=1), encoding="utf-8")
    report = out / "report.md"
    report.write_text(search_report(evaluation, title, command, plots), encoding="utf-8")
    return report


def clean_json(value):
    """Numpy scalars to Python, NaN and infinities to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- binary trials


def plot_binary_det(curves: dict[str, Curve], path: str | Path, title: str = "DET") -> Path:
    """Miss rate against false positive rate for each named set of trials (linear axes, in %)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for name, curve in curves.items():
        axis.plot(100 * curve.fpr, 100 * curve.fnr, label=name)
    axis.plot([0, 100], [0, 100], color="grey", linewidth=0.6, linestyle=":")
    axis.set_xlabel("false alarm rate (%)")
    axis.set_ylabel("miss rate (%)")
    axis.set_xlim(0, 100)
    axis.set_ylim(0, 100)
    axis.set_title(title + " (dotted: EER line)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
