"""The evaluation's report: the JSON written to `evaluations/<domain>_<stamp>/report.json`, its terminal table
and its bar chart (`chart.png`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DocbotError

__all__ = ["EvaluationReport", "ANSWER_METRICS", "RETRIEVAL_METRICS", "list_evaluations", "new_report_dir",
           "write_chart"]

ANSWER_METRICS = ("accuracy", "exact_match", "f1", "rouge_l")
RETRIEVAL_METRICS = ("hit_at_k", "mrr", "wrongly_declined", "declined")

_LABELS = {"accuracy": "answer in reply", "exact_match": "EM", "f1": "F1", "rouge_l": "ROUGE-L",
           "hit_at_k": "hit@{k}", "mrr": "MRR@{depth}", "wrongly_declined": "wrongly declined",
           "declined": "off-topic declined"}


@dataclass
class EvaluationReport:
    """What `evaluate` measured; `data` is the JSON written to `path`, `chart` the PNG beside it."""

    data: dict
    path: Path | None = None
    chart: Path | None = None
    notes: list[str] = field(default_factory=list)

    def arm(self, set_name: str, arm: str) -> dict:
        """The metrics of one arm on one set: {metric: {"mean", "low", "high", "n"}}."""
        return next(s for s in self.data["sets"] if s["name"] == set_name)["arms"][arm]

    def table(self) -> str:
        """The terminal view: one block per question set, one row per arm, then the retrieval report."""
        settings = self.data["settings"]
        label = {m: _LABELS[m].format(**settings) for m in _LABELS}
        cell = 21
        lines = [f"Evaluation of {_what(self.data)} "
                 f"on domain '{self.data['domain']}' (greedy, seed {settings['seed']}, {settings['k']} block(s), "
                 f"95% bootstrap intervals from {settings['n_bootstrap']} resamples)"]
        for s in self.data["sets"]:
            lines += ["", f"{s['description']}: {s['n']} answerable and {s.get('off_topic', 0)} off-topic "
                          f"question(s)"]
            metrics = [*ANSWER_METRICS, *RETRIEVAL_METRICS]
            lines.append((f"  {'arm':<22}" + "".join(f"{label[m]:<{cell}}" for m in metrics)).rstrip())
            for arm in self.data["arms"]:
                row = s["arms"][arm]
                lines.append(f"  {arm:<22}" + "".join(f"{_fmt_ci(row.get(m)):<{cell}}" for m in metrics).rstrip())
            for pair, metrics_diff in s.get("differences", {}).items():
                lines.append(f"  {pair}: " + ", ".join(
                    f"{label[m]} {_fmt_diff(d)}" for m, d in metrics_diff.items()))
            lines.append("  loops in the raw stream / guard fired: " + ", ".join(
                f"{arm} {s['arms'][arm].get('raw_loops', 0)}/{s['arms'][arm].get('guard_fired', 0)}"
                for arm in self.data["arms"]))
        r = self.data.get("retrieval")
        if r:
            lines += ["", f"Retrieval on {r['questions']} ({r['n']} question(s) with a gold source)",
                      (f"  {'mode':<22}" + "".join(f"{f'hit@{d}':<{cell}}{f'MRR@{d}':<{cell}}"
                                                    for d in r["depths"])).rstrip()]
            for mode, scores in r["modes"].items():
                lines.append(f"  {mode:<22}" + "".join(
                    f"{_fmt_ci(scores[f'hit@{d}']):<{cell}}{_fmt_ci(scores[f'mrr@{d}']):<{cell}}"
                    for d in r["depths"]).rstrip())
        for note in self.data.get("notes", []):
            lines.append(f"note: {note}")
        if self.path:
            lines += ["", f"report: {self.path}" + (f"   chart: {self.chart}" if self.chart else "")]
        return "\n".join(lines)

    __str__ = table


def _what(data: dict) -> str:
    model = data["model"]
    if model["version"] is None:
        return f"the base model {model['base_model']} alone (no fine-tuned version yet)"
    return f"{model['version']} against its base {model['base_model']}"


def _fmt_diff(d: dict) -> str:
    """'+0.067 [-0.02, +0.15] (detectable 0.12)': a paired difference with its interval and the smallest effect
    the questions could show."""
    if d.get("mean") is None:
        return "-"
    detectable = f" (detectable {d['detectable']:.2f})" if d.get("detectable") is not None else ""
    return f"{d['mean']:+.3f} [{d['low']:+.2f}, {d['high']:+.2f}]{detectable}"


def _fmt_ci(ci: dict | None) -> str:
    if not ci or ci.get("mean") is None:
        return "-"
    return f"{ci['mean']:.3f} [{ci['low']:.2f},{ci['high']:.2f}]"


def list_evaluations(folder: str | Path, version: str | None = None) -> list[tuple[Path, dict]]:
    """Written reports (`<folder>/<stamp>/report.json`), newest first, optionally only those of one model
    version (by name, e.g. `medical_finetuned_v1.0.0`): how a registry entry finds its evaluations."""
    found = []
    for path in Path(folder).glob("*/report.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if version is None or data.get("model", {}).get("version") == Path(version).name:
            found.append((path, data))
    return sorted(found, key=lambda item: item[1].get("created_at", ""), reverse=True)


def new_report_dir(root: Path, domain: str) -> Path:
    """`<root>/<domain>_<UTC time>/`, with a suffix when taken: no report is overwritten."""
    base = f"{domain}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = root / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise DocbotError(f"{root}: cannot make a new report folder for {base}")


def write_chart(data: dict, path: Path) -> None:
    """Grouped bars, one panel per question set (plus retrieval): each arm's metrics with their intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = data["settings"]
    label = {m: _LABELS[m].format(**settings) for m in _LABELS}
    panels = len(data["sets"]) + bool(data.get("retrieval"))
    fig = Figure(figsize=(11, 3.6 * panels), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    colours = {"base": "#9ecae1", "base+retrieval": "#3182bd", "fine-tuned": "#fdae6b",
               "fine-tuned+retrieval": "#e6550d", "vector": "#a1d99b", "hybrid": "#31a354"}

    def bars(ax, groups: list[str], series: dict[str, list[dict | None]], title: str) -> None:
        width = 0.8 / len(series)
        for i, (name, cis) in enumerate(series.items()):
            xs, means, errs = [], [], [[], []]
            for g, ci in enumerate(cis):
                if ci and ci.get("mean") is not None:
                    xs.append(g - 0.4 + width * (i + 0.5))
                    means.append(ci["mean"])
                    errs[0].append(max(0.0, ci["mean"] - ci["low"]))
                    errs[1].append(max(0.0, ci["high"] - ci["mean"]))
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=name, color=colours.get(name))
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 1.18)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, ncol=len(series), loc="upper center")
        ax.grid(axis="y", alpha=0.3)

    metrics = [*ANSWER_METRICS, *RETRIEVAL_METRICS]
    for ax, s in zip(axes, data["sets"]):
        bars(ax, [label[m] for m in metrics], {arm: [s["arms"][arm].get(m) for m in metrics] for arm in data["arms"]},
             f"{s['description']} (n={s['n']})")
    if data.get("retrieval"):
        r = data["retrieval"]
        keys = [f"{kind}@{d}" for d in r["depths"] for kind in ("hit", "mrr")]
        bars(axes[-1], [key.replace("mrr", "MRR") for key in keys],
             {mode: [scores[key] for key in keys] for mode, scores in r["modes"].items()},
             f"retrieval: vector-only vs hybrid on {r['questions']} (n={r['n']})")
    fig.suptitle(f"{_what(data)}: means with 95% bootstrap intervals", fontsize=11)
    fig.savefig(path, dpi=100)
