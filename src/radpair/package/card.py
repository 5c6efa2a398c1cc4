"""The model card: ``card.json`` for programs and ``README.md`` for people.

A package outlives the run folder it came from, so the card must answer on its own what
the model was trained on, how well it did and on what, what it is for, and what it must
not be used for. It also holds the SHA-256 of every other file (the root of the load-time
check), which is why it is written last.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

CARD_METRICS = ("macro_auc", "macro_ap", "macro_f1", "accuracy", "macro_ece", "ece")

INTENDED_USE = ("Research use: scoring chest radiographs for the listed findings, to compare representation-learning "
                "methods and to try a model on a colleague's images. Not a medical device; not for diagnosis or triage.")


def limitations(card: dict[str, Any]) -> list[str]:
    out = []
    data = card.get("training_data") or {}
    if data.get("synthetic"):
        out.append("Trained on synthetic radiographs: its probabilities say nothing about real patients.")
    n = data.get("n_train_labelled")
    if n is not None:
        out.append(f"The head saw {n} labelled training images; expect wide uncertainty on new data.")
    views = data.get("views")
    if views:
        out.append(f"Trained on views {', '.join(views)} only; other views are flagged and should not be trusted.")
    out.append("Images are resized to {0}x{0} and normalised as in preprocessing.json; an image prepared otherwise "
               "(other windowing, inverted, cropped) gets confident but meaningless outputs.".format(
                   (card.get("preprocessing") or {}).get("image_size", ["?"])[0]))
    out.append("Thresholds were chosen on a small validation draw; the decision a label column shows is only as "
               "good as that draw. Recalibrate on local validation data before any use.")
    if not card.get("ood"):
        out.append("No training feature statistics were stored: out-of-distribution inputs are not flagged.")
    return out


def metric_rows(test_metrics: dict[str, Any]) -> list[dict[str, Any]]:
    values, ci = test_metrics.get("values") or {}, test_metrics.get("ci") or {}
    rows = []
    for m in CARD_METRICS:
        if values.get(m) is not None:
            lo, hi = (ci.get(m) or [None, None])[:2]
            rows.append({"metric": m, "value": values[m], "ci_low": lo, "ci_high": hi})
    return rows


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def readme(card: dict[str, Any], files: dict[str, str]) -> str:
    lines = [f"# {card['name']}", "", card.get("summary", ""), "",
             "Load and predict with radpair alone (no pickle; every file's SHA-256 is checked on load):", "",
             "```", f"radpair predict --model {card['name']} IMAGES_OR_FOLDER... -o predictions.csv", "```", "",
             "## Intended use", "", card["intended_use"], "", "## Limits", ""]
    lines += [f"- {x}" for x in card["limitations"]]
    lines += ["", "## Training data", ""]
    for k, v in (card.get("training_data") or {}).items():
        if v not in (None, "", [], {}):
            lines.append(f"- {k}: {v}")
    lines += ["", "## Labels and decisions", "", f"Outputs: {', '.join(card['class_names'])} "
              f"({'softmax, argmax decision' if card['categorical'] else 'sigmoid per class, thresholded'})."]
    th = card.get("thresholds")
    if th:
        lines.append(f"Thresholds chosen on the **{th.get('split')}** split ({th.get('chosen_on')}): "
                     + ", ".join(f"{n} {v:.3f}" for n, v in zip(card["class_names"], th["values"])) + ".")
    cal = card.get("calibration") or {}
    if cal.get("fitted"):
        lines.append(f"Temperature scaling fitted on validate: T = {cal['temperature']:.3f}; ECE {_f(cal.get('ece_before'))}"
                     f" → {_f(cal.get('ece_after'))} (n = {cal.get('n_validation')}).")
    rows = card.get("metrics", {}).get("test_rows") or []
    if rows:
        lines += ["", "## Test metrics (patient-bootstrap 95% CIs)", "", "| metric | value | CI |", "|---|---|---|"]
        lines += [f"| {r['metric']} | {_f(r['value'])} | [{_f(r['ci_low'])}, {_f(r['ci_high'])}] |" for r in rows]
    ood = card.get("ood")
    if ood:
        lines += ["", "## Out-of-distribution flag", "",
                  f"Mahalanobis distance of the pooled features to {ood['n']} training images (Ledoit-Wolf covariance); "
                  f"flagged above {ood['threshold']:.2f}, the out-of-fold {ood['percentile']:.0f}th percentile of "
                  "training distances."]
    lines += ["", "## Files (SHA-256)", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| {name} | `{sha}` |" for name, sha in files.items()]
    lines.append("")
    return "\n".join(lines)
