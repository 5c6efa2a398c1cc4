"""Running a paper's protocol end to end: corpora, pretraining, transfer, tables, claims.

The paper file (``radpair/replicate/papers/<name>.yaml``) is the plan; this module only
carries it out, in four resumable stages under ``out``:

1. **Corpora** (``corpora/<role>``): the synthetic stand-in of each corpus the paper uses,
   generated from the mode's preset (``cpu`` or ``quick``); ``--data`` supplies the main
   corpus in data mode. A tokenizer is trained on the main corpus's training reports.
2. **Pretraining** (``pretrain/<method id>``): each method's run, from the paper's recipe
   (``configs/recipes/<paper>.yaml``) with the method's settings for the mode
   (:func:`pretrain_overrides`) and its options, which are keys of the method's own config.
   Runs resume from their checkpoints.
3. **Transfer** (``transfer/<protocol>``): the protocol's arms on identical patient-level
   subsets (:func:`radpair.transfer.run_transfer`); arms whose downstream settings differ
   (a head, a learning rate) run as separate studies on the same subsets. Cells resume.
4. **Tables and claims** (``report.md``, ``results.json``): every table cell the paper's
   selectors name, measured beside the published number, and each claim's verdict.

What a paper needs and radpair does not yet have is refused before any work (see
:func:`radpair.replicate.registry.paper_status`); arms that need a missing capability are
skipped and listed.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from radpair.errors import ConfigError
from radpair.replicate.schema import Arm, MethodSpec, Paper, Protocol

Log = Callable[[str], None]

# method settings (paper / cpu / quick) -> dotted config keys; None = described, not configurable
_SETTING_KEYS: dict[str, str | None] = {
    "backbone": "image_encoder.name",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "batch_size": "data.batch_size",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "schedule": "optim.schedule",
    "max_length": "text_encoder.max_length",
    "weight_decay": "optim.weight_decay",
    "backbone_init": None,
    "image_size": None,  # the corpus's image size decides
    "pairs": None,
    "text_encoder": None,  # a mapping of text_encoder keys, or a description of the paper's encoder
    "projection_dim": None,  # described unless the method has the key (then it is set)
    "temperature": None,
    "text_sections": "data.text_sections",
    "augmentation": None,  # described; the recipe's data.augment applies
    "warmup": "optim.warmup_fraction",
}


# a paper file's schedule names -> optim.schedule; the warm-up comes from optim.warmup_* (the recipe's)
_SCHEDULES = {"constant": "constant", "cosine": "cosine", "linear": "linear", "warmup-linear": "linear",
              "warmup-cosine": "cosine"}


def _method_keys(method: str) -> set[str]:
    from radpair.methods import method_class

    return {f.name for f in fields(method_class(method).config_class)} - {"name"}


def pretrain_overrides(paper: Paper, spec: MethodSpec, mode: str, joint: Protocol | None = None) -> list[str]:
    """Dotted overrides that turn the paper's recipe into this method's run in ``mode``.

    ``joint``: a protocol that scores this method's own classifier; its task, training
    labels and labelled fraction become the method's (when the method has those keys)."""
    from radpair.methods import method_class, resolve_method_config

    settings = spec.settings(mode)
    keys = _method_keys(spec.method)
    bad = [k for k in spec.options if k not in keys]
    if bad:
        raise ConfigError(f"{paper.path}: option {bad[0]!r} of method {spec.id!r} is not a key of method "
                          f"{spec.method!r} (valid: {sorted(keys)})")
    schedule = method_class(spec.method).schedule_keys(resolve_method_config({"name": spec.method, **spec.options}))
    out: dict[str, Any] = {"method.name": spec.method}
    for name, value in settings.items():
        if value is None:
            continue  # not stated by the paper: the recipe's value stands
        if name in schedule:
            out[schedule[name]] = value
            continue
        if name == "text_encoder":
            if isinstance(value, dict):
                out.update({f"text_encoder.{k}": v for k, v in value.items()})
            continue
        if name in keys:  # the method's own key (text_sections, projection_dim, embedding_dim, ...)
            out[f"method.{name}"] = value
            continue
        if name not in _SETTING_KEYS:
            raise ConfigError(f"{paper.path}: method {spec.id!r} setting {name!r} maps to no config key "
                              f"(known: {sorted(_SETTING_KEYS)}; method keys: {sorted(keys)})")
        target = _SETTING_KEYS[name]
        if target is None:
            continue
        if name == "schedule":
            if value not in _SCHEDULES:
                raise ConfigError(f"{paper.path}: method {spec.id!r}: schedule {value!r} has no equivalent here "
                                  f"(supported: {sorted(_SCHEDULES)})")
            value = _SCHEDULES[value]
        out[target] = value
    if joint is not None:
        plan = joint.plan(mode)
        for key, value in (("label_task", joint.task), ("label_source", joint.train_labels),
                           ("labelled_fraction", plan["labelled_fraction"])):
            if key in keys and value is not None:
                out[f"method.{key}"] = value
    for name, value in spec.options.items():
        out[f"method.{name}"] = value
    return [f"{k}={_yaml(v)}" for k, v in out.items()]


def joint_protocol(paper: Paper, method_id: str) -> Protocol | None:
    """The protocol (if any) that scores ``method_id``'s own classifier."""
    for p in paper.transfer:
        if any(a.protocol == "joint" and a.start == method_id for a in p.arms):
            return p
    return None


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------- stages
def _corpus(paper: Paper, role: str, mode: str, data: str | Path | None, out: Path, log: Log):
    from radpair.data.corpus import Corpus

    spec = paper.corpora[role]
    preset = spec.preset(mode)
    if preset is None:  # data mode
        if role != "main" or data is None:
            raise ConfigError(f"{paper.name}: corpus {role!r} has no real-data source here; run --quick or the "
                              "cpu preset, or supply it")
        return Corpus.open(data)
    folder = out / "corpora" / role
    stamp = folder / "replicate_settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == preset:
        return Corpus.open(folder)
    from radpair.data.synth import generate_corpus, load_synth_config

    cfg = load_synth_config(preset.get("difficulty", "default"), overrides=preset.get("synth") or {})
    log(f"{paper.name}: generating the {role} corpus ({preset['n']} images, {preset['size']} px, seed {preset['seed']})")
    corpus = generate_corpus(folder, n_images=int(preset["n"]), size=int(preset["size"]), seed=int(preset["seed"]),
                             config=cfg, workers=2)
    stamp.write_text(json.dumps(preset))
    return corpus


def _corpus_stamp(corpus) -> str:
    """What the corpus is (its generator settings or preprocessing plan), so later stages
    built on another corpus in the same folder are redone, not reused."""
    return json.dumps(corpus.meta, sort_keys=True, default=str)


def _tokenizer(corpus, out: Path) -> Path:
    from radpair.text import train_wordpiece_tokenizer

    folder = out / "tokenizer"
    stamp = folder / "corpus_meta.json"
    if not (folder / "tokenizer.json").is_file() or not stamp.is_file() or stamp.read_text() != _corpus_stamp(corpus):
        texts = corpus.split_index("train")["report"].astype(str).tolist()
        train_wordpiece_tokenizer(texts, folder, vocab_size=3000)
        stamp.write_text(_corpus_stamp(corpus))
    return folder


def _pretrain(paper: Paper, spec: MethodSpec, mode: str, corpus, tokenizer: Path, out: Path, progress: bool,
              device: str, log: Log) -> Path:
    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    run_dir = out / "pretrain" / spec.id
    weights = run_dir / "image_encoder.safetensors"
    overrides = pretrain_overrides(paper, spec, mode, joint_protocol(paper, spec.id))
    recipe_text = (_repo_root() / paper.info.recipe).read_text()
    done = json.dumps({"corpus": _corpus_stamp(corpus), "overrides": overrides, "recipe": recipe_text})
    if weights.is_file() and (run_dir / "DONE").is_file() and (run_dir / "DONE").read_text() == done:
        return weights
    started = run_dir / "STARTED"
    if run_dir.is_dir() and (not started.is_file() or started.read_text() != done):
        import shutil  # a run of other settings (finished or not) is not continued: start again

        shutil.rmtree(run_dir)
    recipe = _repo_root() / paper.info.recipe
    overrides = overrides + [
        f"data.corpus={corpus.root}", f"text_encoder.tokenizer={tokenizer}", f"train.out_dir={run_dir}",
        f"train.progress={'true' if progress else 'false'}", f"train.device={device}"]
    if mode != "data":
        overrides.append("text_encoder.pretrained=null")
    cfg = load_config(PretrainConfig, recipe, overrides)
    log(f"{paper.name}: pretraining {spec.id} ({spec.method})")
    t0 = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(done)
    Trainer(cfg).fit(resume=True)
    (run_dir / "DONE").write_text(done)
    (run_dir / "wall_s.txt").write_text(f"{time.time() - t0:.0f}\n")
    return weights


def _repo_root() -> Path:
    """The checkout holding ``configs/recipes`` (recipes are repository files, like the demo's)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs" / "recipes").is_dir():
            return parent
    raise ConfigError(f"no configs/recipes folder above {here}; run from a radpair checkout")


def _verdict(result) -> str:
    if result.holds is None:
        return "undecided (a deciding cell was not measured)"
    detail = "; ".join(f"{'/'.join(c.a)} {c.a_value:.3g} vs {'/'.join(c.b)} {c.b_value:.3g}"
                       for c in result.comparisons if c.a_value is not None and c.b_value is not None)
    return ("holds here" if result.holds else "does not hold here") + (f" ({detail})" if detail else "")


_HYPER = {  # downstream hyper-parameters (paper / cpu / quick) -> TransferConfig keys
    "backbone": ("arch",),  # the random start's architecture
    "lr": ("finetune.lr", "frozen_head.lr"),
    "batch_size": ("finetune.batch_size", "frozen_head.batch_size"),
    "max_steps": ("finetune.max_steps",),
    "epochs": ("frozen_head.max_epochs",),
    "weight_decay": ("finetune.weight_decay", "frozen_head.weight_decay"),
}


def _available(arm: Arm) -> bool:
    from radpair.replicate.registry import CAPABILITIES

    return not arm.na and all(c in CAPABILITIES for c in arm.requires)


def transfer_studies(protocol: Protocol, mode: str) -> list[tuple[list[Arm], dict[str, Any]]]:
    """Arms grouped by identical downstream settings: each group is one transfer study.
    Arms that cannot run here (``na``, or a capability missing) are left out."""
    groups: dict[str, tuple[list[Arm], dict[str, Any]]] = {}
    for arm in protocol.arms:
        if not _available(arm) or arm.protocol == "joint":  # joint arms: the method's own classifier
            continue
        hyper = protocol.hyper(arm, mode)
        settings: dict[str, Any] = {}
        for key, value in hyper.items():
            if value is None or key not in _HYPER:
                continue  # not stated, or descriptive (optimizer name, early stopping rule, loss)
            for target in _HYPER[key]:
                settings[target] = [value] if target.endswith((".lr", ".weight_decay")) else value
        if arm.head and arm.head != "linear" and arm.protocol == "frozen-head":
            settings["frozen_head.head"] = arm.head
        sig = json.dumps(settings, sort_keys=True)
        groups.setdefault(sig, ([], settings))[0].append(arm)
    return list(groups.values())


def _set(cfg: Any, dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    obj = cfg
    for p in path:
        obj = getattr(obj, p)
    setattr(obj, last, value)


def _joint_labelled_rows(protocol: Protocol, out: Path) -> int | None:
    """How many training pairs carried a label in the protocol's joint runs (their run_info)."""
    for arm in protocol.arms:
        if arm.protocol == "joint":
            try:
                info = json.loads((out / "pretrain" / arm.start / "run_info.json").read_text())
                return int(info["labels"]["labelled_rows"])
            except (OSError, ValueError, KeyError):
                continue
    return None


def _transfer(paper: Paper, protocol: Protocol, mode: str, corpora: dict, encoders: dict[str, Path], out: Path,
              device: str, progress: bool, log: Log, arch: str | None = None) -> list[dict]:
    from radpair.transfer import TransferConfig, run_transfer
    from radpair.transfer.subsets import Budget

    plan = protocol.plan(mode)
    budgets = plan["budgets"]
    results = []
    joint_arms = [a for a in protocol.arms if a.protocol == "joint" and not a.na]
    if joint_arms:
        results.append(_joint_study(paper, protocol, joint_arms, corpora, out, device, log, mode))
    for k, (arms, settings) in enumerate(transfer_studies(protocol, mode)):
        cfg = TransferConfig(task=protocol.task, repeats=int(plan["repeats"]), device=device, workers=2,
                             train_labels=protocol.train_labels,
                             test_labels=eval_labels(protocol, mode))
        alias: dict[str, str] = {}
        if plan["labelled_fraction"] is not None and budgets.kind == "n" and list(budgets.values) == ["all"]:
            # "every labelled image" when only a share is labelled (Chauhan: 2.7 %): the transfer
            # arms get as many labels as the joint models trained their classifiers on
            count = _joint_labelled_rows(protocol, out)
            if count:
                cfg.n, alias = [str(count)], {"all": str(count)}
            else:
                cfg.fractions, cfg.n = [float(plan["labelled_fraction"])], []
                alias = {"all": Budget.fraction(float(plan["labelled_fraction"])).key}
        elif budgets.kind == "fractions":
            cfg.fractions, cfg.n = [float(v) for v in budgets.values], []
        else:
            cfg.n = [str(v) for v in budgets.values]
        starts = sorted({a.start for a in arms})
        cfg.encoders = [f"{s}={encoders[s]}" if s != "random" else "random" for s in starts]
        cfg.arms = [f"{a.start}:{a.protocol}" for a in arms]
        if arch and "arch" not in settings:  # the random start: the pretrained models' architecture
            cfg.arch = arch
        for key, value in settings.items():
            _set(cfg, key, value)
        cfg.validate()
        folder = out / "transfer" / protocol.id / f"study{k}"
        log(f"{paper.name}: transfer {protocol.id}, study {k}: {', '.join(a.id for a in arms)}")
        result = run_transfer(cfg, corpora[protocol.corpus], folder, progress=progress)
        results.append({"arms": {f"{a.start}:{a.protocol}": a.id for a in arms}, "budget_alias": alias,
                        "results": json.loads((Path(folder) / "results.json").read_text()), "folder": str(folder)})
        del result
    return results


def eval_labels(protocol: Protocol, mode: str) -> str:
    """The test labels of the protocol's first evaluation set. A real dataset's own labels
    (``index``: e.g. expert-corrected grades) have no column in a synthetic corpus; there the
    generator's drawn truth stands in for them."""
    labels = protocol.eval_sets[0].labels if protocol.eval_sets else ""
    return "truth" if labels == "index" and mode != "data" else labels


def _joint_study(paper: Paper, protocol: Protocol, arms: list[Arm], corpora: dict, out: Path, device: str,
                 log: Log, mode: str) -> dict:
    """The ``joint`` arms: each start's own classifier on the protocol's test split, as a
    study whose summaries look like a transfer study's (budget ``all``, one repeat)."""
    from radpair.evaluation.own_classifier import evaluate_own_classifier

    summaries, arm_keys = [], {}
    test_labels = eval_labels(protocol, mode) or None
    for arm in arms:
        log(f"{paper.name}: scoring {arm.start}'s own classifier on {protocol.task}")
        scored = evaluate_own_classifier(out / "pretrain" / arm.start, corpora[protocol.corpus], protocol.task,
                                         test_labels=test_labels, device=device)
        key = f"{arm.start}:joint"
        arm_keys[key] = arm.id
        for metric, value in scored["values"].items():
            ci = scored["ci"].get(metric)
            summaries.append({"arm": key, "budget": "all", "metric": metric, "mean": value, "test_ci_mean": ci})
    folder = out / "transfer" / protocol.id / "joint"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"summaries": summaries}, indent=2))
    return {"arms": arm_keys, "budget_alias": {}, "results": {"summaries": summaries}, "folder": str(folder)}


_SELECTORS = {"protocol", "arm", "budget", "metric", "eval", "evaluation", "method", "class"}
# a paper file's metric names -> the names in transfer summaries (first present wins)
_METRICS = {"auc": ("macro_auc",), "ap": ("macro_ap",), "aucpr": ("macro_ap",), "f1": ("macro_f1",),
            "precision": ("macro_precision",),
            "recall": ("macro_recall",), "accuracy": ("accuracy", "macro_accuracy")}
# ... and in matching evaluations (radpair.objectives.matching.MatchingMetrics)
_MATCHING = {"ap": "average_precision"}


def head_notes(paper: Paper) -> list[str]:
    """Arms whose head this harness cannot give them (the TIMNet head exists for frozen-head only)."""
    out = []
    for p in paper.transfer:
        odd = [a for a in p.arms if a.head and a.head != "linear" and a.protocol == "finetune" and not a.na]
        if odd:
            heads = ", ".join(sorted({a.head for a in odd}))
            out.append(f"Protocol `{p.id}`: arms {', '.join(a.id for a in odd)} fine-tune with a linear head here; the "
                       f"paper's {heads} head is available to frozen-head arms only.")
    return out


def _evaluations(paper: Paper, corpora: dict, out: Path, device: str, log: Log) -> dict[str, dict[str, dict]]:
    """``{evaluation id: {method id: metrics}}`` for the evaluations of the pretrained models."""
    from radpair.evaluation.matching import evaluate_matching

    from radpair.replicate.registry import CAPABILITIES

    found: dict[str, dict[str, dict]] = {}
    for ev in paper.evaluations:
        if not all(c in CAPABILITIES for c in ev.requires):
            continue  # listed as skipped by paper_status
        for method_id in ev.methods:
            log(f"{paper.name}: {ev.kind} of {method_id} on the {ev.split} split")
            result = evaluate_matching(out / "pretrain" / method_id, corpora[ev.corpus], split=ev.split, device=device)
            found.setdefault(ev.id, {})[method_id] = result.metrics
    return found


def measured_tables(paper: Paper, transfer: dict[str, list[dict]],
                    evaluations: dict[str, dict[str, dict]] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """``{table: {row: {column: (mean, lo, hi)}}}`` from the transfer results of each protocol."""
    from radpair.transfer.subsets import Budget

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for table in paper.tables:
        cells: dict[str, dict[str, Any]] = {}
        for row in table.rows:
            for col in table.columns:
                if table.na(row.id, col.id):
                    continue
                sel = table.cell(row.id, col.id)
                unknown = set(sel) - _SELECTORS
                if unknown:
                    raise ConfigError(f"{paper.path}: table {table.id} cell {row.id}/{col.id} selects by "
                                      f"{sorted(unknown)}, which the runner does not read yet")
                if "class" in sel:
                    continue  # per-class cells are not filled yet: "not run", never the macro value
                if "eval" in sel and "protocol" in sel:
                    first = paper.protocol(sel["protocol"]).eval_sets
                    if first and sel["eval"] != first[0].id:
                        continue  # only the first evaluation set is scored today
                if "evaluation" in sel:
                    metrics = (evaluations or {}).get(sel["evaluation"], {}).get(sel.get("method"), {})
                    name = _MATCHING.get(sel.get("metric"), sel.get("metric"))
                    if name in metrics:
                        cells.setdefault(row.id, {})[col.id] = (metrics[name], None, None)
                    continue
                if "protocol" not in sel or sel["protocol"] not in transfer:
                    continue
                budget = sel.get("budget")
                kind = paper.protocol(sel["protocol"]).budgets.kind
                key = None if budget is None else (Budget.fraction(budget).key if kind == "fractions"
                                                   else Budget.parse(budget).key)
                for study in transfer[sel["protocol"]]:
                    arm_key = next((k for k, v in study["arms"].items() if v == sel.get("arm")), None)
                    if arm_key is None:
                        continue
                    wanted = study.get("budget_alias", {}).get(key, key)
                    present = {s["metric"] for s in study["results"]["summaries"] if s["arm"] == arm_key}
                    metric = sel.get("metric")
                    metric = next((m for m in _METRICS.get(metric, ()) if m in present), metric)
                    for s in study["results"]["summaries"]:
                        if s["arm"] == arm_key and s["metric"] == metric and (key is None or s["budget"] == wanted):
                            lo, hi = s.get("test_ci_mean") or s.get("repeat_ci") or (None, None)
                            cells.setdefault(row.id, {})[col.id] = (s["mean"], lo, hi)
        out[table.id] = cells
    return out


def label_savings(paper: Paper, transfer: dict[str, list[dict]], metric: str = "macro_auc") -> list[str]:
    """TIMNet's "labels needed" reduction for every fraction protocol: with f_base the
    fraction where the from-scratch arm peaks and f_match the smallest fraction where a
    pretrained arm reaches that peak, the reduction is (f_base - f_match) / f_base."""
    from radpair.transfer.subsets import Budget

    lines = []
    for p in paper.transfer:
        if p.budgets.kind != "fractions":
            continue
        means: dict[str, dict[float, float]] = {}
        for study in transfer.get(p.id, []):
            for s in study["results"]["summaries"]:
                if s["metric"] == metric and s["arm"] in study["arms"] and s.get("mean") is not None:
                    frac = Budget.parse(s["budget"]).value if s["budget"].endswith("%") else None
                    if frac is not None:
                        means.setdefault(study["arms"][s["arm"]], {})[frac] = s["mean"]
        base = [a for a in p.arms if a.start == "random" and a.id in means]
        for b in base:
            f_base, peak = max(means[b.id].items(), key=lambda kv: (kv[1], -kv[0]))
            for a in p.arms:
                if a.start == "random" or a.id not in means:
                    continue
                reach = sorted(f for f, v in means[a.id].items() if v >= peak)
                if not reach:
                    lines.append(f"- `{p.id}`: {a.id} never reaches {b.id}'s best {metric} ({peak:.3f} at "
                                 f"{f_base:.1%}): no label saving here.")
                    continue
                f_match = reach[0]
                head = f"- `{p.id}`: {b.id} peaks at {f_base:.1%} ({metric} {peak:.3f}); {a.id} reaches it at {f_match:.1%}"
                if f_match <= f_base:
                    lines.append(f"{head}: labels needed reduced by {(f_base - f_match) / f_base:.0%}.")
                else:
                    lines.append(f"{head}: {f_match / f_base:.1f}x the labels, no saving here.")
    return lines


def run_paper(paper: Paper, mode: str, data: str | Path | None, out: str | Path, progress: bool = True,
              device: str = "cpu", log: Log = print) -> Path:
    """Pretrain the paper's methods, run its transfer arms and write its tables beside the
    published numbers under ``out``; ``mode`` is ``quick``, ``cpu`` or ``data``.
    Returns the path of ``report.md``."""
    import radpair.transfer  # noqa: F401 - registers what the transfer harness can run
    from radpair.replicate.registry import CAPABILITIES, paper_status
    from radpair.replicate.tables import evaluate_claims, render_table

    status = paper_status(paper)
    if not status.runnable:
        raise ConfigError(f"{paper.name} cannot run yet; {status.summary()}")
    for ev in paper.evaluations:
        if ev.kind != "matching" and all(c in CAPABILITIES for c in ev.requires):
            raise ConfigError(f"{paper.name}: evaluation kind {ev.kind!r} is not connected to the runner yet")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    roles = {m.corpus for m in paper.methods} | {p.corpus for p in paper.transfer}
    corpora = {role: _corpus(paper, role, mode, data, out, log) for role in sorted(roles)}
    tokenizer = _tokenizer(corpora["main"], out)
    encoders = {m.id: _pretrain(paper, m, mode, corpora[m.corpus], tokenizer, out, progress, device, log)
                for m in paper.methods}
    arch = next((o.split("=", 1)[1] for o in pretrain_overrides(paper, paper.methods[0], mode)
                 if o.startswith("image_encoder.name=")), None) if paper.methods else None
    transfer = {p.id: _transfer(paper, p, mode, corpora, encoders, out, device, progress, log, arch)
                for p in paper.transfer}
    evaluations = _evaluations(paper, corpora, out, device, log)
    measured = measured_tables(paper, transfer, evaluations)
    claims = evaluate_claims(paper, measured)
    parts = [f"# {paper.name}: {paper.info.title}", "",
             f"Mode `{mode}`; run folder `{out}`; {time.time() - t0:.0f} s this launch.", ""]
    for p in paper.transfer:
        if p.eval_sets and eval_labels(p, mode) != p.eval_sets[0].labels:
            parts += [f"Protocol `{p.id}`: the paper's `{p.eval_sets[0].labels}` test labels ({p.eval_sets[0].label}) "
                      f"are the synthetic corpus's drawn truth here.", ""]
    parts += [f"{n}\n" for n in head_notes(paper)]
    for pid, studies in transfer.items():
        for st in studies:
            for wanted, used in st.get("budget_alias", {}).items():
                parts += [f"Protocol `{pid}`: budget `{wanted}` runs as `{used}` here, the number of training pairs "
                          "the joint models' classifiers saw (only a share of the pairs is labelled). The transfer "
                          "arms read their labels under the task's report policy; the joint models only from "
                          "reports that state a grade.", ""]
    if mode == "quick":
        parts += ["**Quick mode is a smoke run** (tiny corpus, a few steps, one repeat): it checks that the "
                  "protocol runs end to end; its numbers and verdicts say nothing about the paper's claims.", ""]
    for table in paper.tables:
        parts += [render_table(paper, table.id, measured.get(table.id)), ""]
    savings = label_savings(paper, transfer)
    if savings:
        parts += ["## Labels needed (from the measured fraction curves, macro AUC)", "", *savings, ""]
    parts += ["## Claims", ""]
    for c in claims:
        parts.append(f"- **{c.claim.id}**: {' '.join(c.claim.text.split())} — {_verdict(c)}")
    if status.skipped:
        parts += ["", f"Skipped: {status.summary()}"]
    report = out / "report.md"
    report.write_text("\n".join(parts).rstrip() + "\n")
    (out / "results.json").write_text(json.dumps({
        "paper": paper.name, "mode": mode, "measured": {t: {r: {c: list(v) for c, v in cols.items()}
                                                           for r, cols in rows.items()}
                                                       for t, rows in measured.items()},
        "claims": [{"id": c.claim.id, "verdict": _verdict(c)} for c in claims],
        "transfer": {p: [s["folder"] for s in studies] for p, studies in transfer.items()}}, indent=2))
    log(f"{paper.name}: tables and claims in {report}")
    return report
