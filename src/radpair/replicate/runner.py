"""Running a paper's protocol end to end: corpora, pretraining, transfer, tables, claims.

The paper file (``radpair/replicate/papers/<name>.yaml``) is the plan; this module only
carries it out, in four resumable stages under ``out``:

1. **Corpora** (``corpora/<role>``): the synthetic stand-in of each corpus the paper uses,
   generated from the mode's preset (``cpu`` or ``quick``); ``--data`` supplies the main
   corpus in data mode. A tokenizer is trained on the main corpus's training reports
   (WordPiece, or the word vocabulary the methods' ``vocabulary`` setting asks for), and
   word2vec vectors for the runs whose ``word_vectors`` setting asks for them
   (:mod:`radpair.replicate.shared_text`).
2. **Pretraining** (``pretrain/<method id>``): each method's run, from the paper's recipe
   (``configs/recipes/<paper>.yaml``) with the method's settings for the mode
   (:func:`pretrain_overrides`) and its options, which are keys of the method's own config.
   Runs resume from their checkpoints. A setting the paper does not give can be chosen on
   the validation split (``choose_on_validate``: a grid of method keys): one run per
   candidate (``pretrain/<method id>/<key>=<value>``), each scored by the method's own
   classifier on the validate split of its joint protocol; the best is the method's run
   and every candidate's score is reported. The test split never takes part.
3. **Transfer** (``transfer/<protocol>``): the protocol's arms on identical patient-level
   subsets (:func:`radpair.transfer.run_transfer`); arms whose downstream settings differ
   (a head, a learning rate) run as separate studies on the same subsets. Cells resume.
   ``joint`` arms score the method's own classifier reading the arm's ``inputs``, on every
   evaluation set of the protocol.
4. **Evaluations** (``evaluations/<id>``): the pretrained models themselves (a matching
   head; reports written for the test images and scored against the written ones).
5. **Tables and claims** (``report.md``, ``results.json``): every table cell the paper's
   selectors name, measured beside the published number, and each claim's verdict.

What a paper needs and radpair does not yet have is refused before any work (see
:func:`radpair.replicate.registry.paper_status`); arms that need a missing capability are
skipped and listed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from radpair.errors import ConfigError
from radpair.replicate.schema import Arm, EvalSet, MethodSpec, Paper, Protocol
from radpair.replicate.shared_text import SharedText
from radpair.transfer.config import NO_STEP_CAP

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
    "lr_scale": "optim.lr_scale",  # replaces the recipe's mapping ({} clears it)
    "lookahead_steps": "optim.lookahead_steps",  # 0: no LookAhead wrapper
    "grad_clip": "optim.grad_clip",
    "method_options": None,  # handled above
    "choose_on_validate": None,  # a grid of method keys: one run per candidate (method_candidates)
    "gpus": None,  # described: the launch (torchrun) decides
    "vocabulary": None,  # the paper's shared tokenizer (shared_text.paper_vocabulary)
    "word_vectors": None,  # the word-vectors stage; the run gets method.word_vectors=<file>
}


# a paper file's schedule names -> optim.schedule; the warm-up comes from optim.warmup_* (the recipe's)
_SCHEDULES = {"constant": "constant", "cosine": "cosine", "linear": "linear", "warmup-linear": "linear",
              "warmup-cosine": "cosine"}


# a paper file's optimizer names -> (optim.name, optim.lookahead_steps): LookAhead is part of
# the name, so a paper that states plain Adam does not inherit a recipe's LookAhead wrapper
# (VirTex's k = 5, the RadTex recipe's); an explicit lookahead_steps setting wins
_OPTIMIZERS = {"adam": ("adam", 0), "adamw": ("adamw", 0), "sgd": ("sgd", 0), "sgd-lookahead": ("sgd", 5)}


def _recipe_lookahead(paper: Paper) -> int:
    from radpair.config import read_yaml_mapping

    optim = read_yaml_mapping(_repo_root() / paper.info.recipe, "optimiser recipe").get("optim") or {}
    return int(optim.get("lookahead_steps") or 0)


def _method_keys(method: str) -> set[str]:
    from radpair.methods import method_class

    return {f.name for f in fields(method_class(method).config_class)} - {"name"}


def pretrain_overrides(paper: Paper, spec: MethodSpec, mode: str, joint: Protocol | None = None,
                       choice: dict[str, Any] | None = None) -> list[str]:
    """Dotted overrides that turn the paper's recipe into this method's run in ``mode``.

    ``joint``: a protocol that scores this method's own classifier; its task, training
    labels and labelled fraction become the method's (when the method has those keys).
    ``choice``: one candidate of the method's ``choose_on_validate`` grid (it wins over
    the options, which state the paper's value or none)."""
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
        if name == "method_options":  # this mode's values of the method's own keys (a smaller decoder on CPU)
            bad = [k for k in (value or {}) if k not in keys]
            if bad:
                raise ConfigError(f"{paper.path}: method {spec.id!r} {mode} method_options key {bad[0]!r} is not a "
                                  f"key of method {spec.method!r} (valid: {sorted(keys)})")
            out.update({f"method.{k}": v for k, v in (value or {}).items()})
            continue
        if name == "choose_on_validate":
            continue  # method_candidates reads it; each candidate's run gets one choice
        if name in ("vocabulary", "word_vectors"):
            continue  # trained by the runner (shared_text); word_vectors is also TieNet's key, for the file
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
        if name == "optimizer":
            if value not in _OPTIMIZERS:
                raise ConfigError(f"{paper.path}: method {spec.id!r}: optimizer {value!r} has no equivalent here "
                                  f"(supported: {sorted(_OPTIMIZERS)})")
            value, lookahead = _OPTIMIZERS[value]
            if settings.get("lookahead_steps") is None and lookahead != _recipe_lookahead(paper):
                out["optim.lookahead_steps"] = lookahead  # only where it changes: other runs keep their stamps
        out[target] = value
    if joint is not None:
        plan = joint.plan(mode)
        for key, value in (("label_task", joint.task), ("label_source", joint.train_labels),
                           ("labelled_fraction", plan["labelled_fraction"])):
            if key in keys and value is not None:
                out[f"method.{key}"] = value
    for name, value in spec.options.items():
        out[f"method.{name}"] = value
    for name, value in (choice or {}).items():
        out[f"method.{name}"] = value
    return [f"{k}={_yaml(v)}" for k, v in out.items()]


def method_candidates(paper: Paper, spec: MethodSpec, mode: str) -> list[dict[str, Any]]:
    """The candidates of the method's ``choose_on_validate`` grid in ``mode`` (every
    combination, in the file's order); ``[]`` when nothing is chosen on validate."""
    import itertools

    grid = spec.settings(mode).get("choose_on_validate") or {}
    where = f"{paper.path}: method {spec.id!r} {mode} setting choose_on_validate"
    if not isinstance(grid, dict):
        raise ConfigError(f"{where} must map method keys to lists of values, got {grid!r}")
    keys = _method_keys(spec.method)
    for key, values in grid.items():
        if key not in keys:
            raise ConfigError(f"{where}: {key!r} is not a key of method {spec.method!r} (valid: {sorted(keys)})")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {key!r} must list at least one value, got {values!r}")
    if not grid:
        return []
    if joint_protocol(paper, spec.id) is None:
        raise ConfigError(f"{where}: candidates are scored by the method's own classifier on the validate split, "
                          f"but no transfer protocol has a joint arm starting from {spec.id!r}")
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def _choice_name(choice: dict[str, Any]) -> str:
    return ",".join(f"{k}={_yaml(v)}" for k, v in choice.items())


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
    if role == "main" and data is not None:  # --data, also with --quick (a smoke test of the real corpus)
        return Corpus.open(data)
    preset = spec.preset(mode)
    if preset is None:  # data mode
        if role != "main" or data is None:
            raise ConfigError(f"{paper.name}: corpus {role!r} has no real-data source here (--data supplies only "
                              "the main corpus); run --quick or the cpu preset")
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


def _tokenizer(corpus, out: Path, settings: dict[str, Any] | None = None) -> Path:
    """``out/tokenizer``: the paper's shared tokenizer (``settings``: the WordPiece default
    unless the methods ask otherwise), trained unless its stamp says it is current."""
    from radpair.replicate.shared_text import WORDPIECE_DEFAULT, train_tokenizer

    return train_tokenizer(corpus, out / "tokenizer", settings or dict(WORDPIECE_DEFAULT), _corpus_stamp(corpus))


def _run_method_config(paper: Paper, spec: MethodSpec, mode: str, choice: dict[str, Any] | None = None):
    """The resolved method config of one run (recipe, then the run's overrides): what the
    word vectors must fit (``word_dim``) and whether it reads text at all."""
    from radpair.config import load_config
    from radpair_train.config import PretrainConfig

    overrides = pretrain_overrides(paper, spec, mode, joint_protocol(paper, spec.id), choice)
    return load_config(PretrainConfig, _repo_root() / paper.info.recipe, overrides).method


def word_vector_plan(paper: Paper, mode: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(method id, candidate name): word2vec settings}`` of every run that asks for word
    vectors in ``mode`` (candidate ``""`` without a ``choose_on_validate`` grid). Checked
    before any work: the dimension against each run's ``word_dim``, gensim installed."""
    from radpair.replicate.shared_text import method_word_vectors, require_word2vec

    plan = {}
    for spec in paper.methods:
        if spec.settings(mode).get("word_vectors") is None:
            continue
        for choice in method_candidates(paper, spec, mode) or [None]:
            settings = method_word_vectors(paper, spec, mode, _run_method_config(paper, spec, mode, choice))
            if settings is not None:
                plan[(spec.id, _choice_name(choice) if choice else "")] = settings
    if plan:
        require_word2vec()
    return plan


def _shared_text(paper: Paper, mode: str, corpus, out: Path, log: Log, vocabulary: dict[str, Any],
                 plan: dict[tuple[str, str], dict[str, Any]]) -> SharedText:
    """The tokenizer stage and the word-vectors stage: the paper's tokenizer, then one set
    of word2vec vectors per (tokenizer, dimension, seed) under ``out/word_vectors``."""
    from radpair.replicate.shared_text import tokenizer_stamp, train_word_vectors

    tokenizer = _tokenizer(corpus, out, vocabulary)
    stamp = tokenizer_stamp(_corpus_stamp(corpus), vocabulary)
    files: dict[str, Path] = {}
    vectors = {}
    for run, settings in plan.items():
        key = json.dumps(settings, sort_keys=True)
        if key not in files:
            files[key] = train_word_vectors(corpus, tokenizer, out / "word_vectors", settings, stamp,
                                            log=lambda m: log(f"{paper.name}: {m}"))
        vectors[run] = (settings, files[key])
    return SharedText(tokenizer, vocabulary, vectors)


def _done_stamp(paper: Paper, spec: MethodSpec, mode: str, corpus, text: SharedText,
                choice: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """(the run's DONE stamp, its overrides with the text inputs): the corpus, the
    overrides and the recipe file, plus the tokenizer settings and word vectors where they
    are not the WordPiece default (so runs of papers that never chose keep their stamps)."""
    overrides = pretrain_overrides(paper, spec, mode, joint_protocol(paper, spec.id), choice)
    text_overrides, text_stamp = text.for_run(spec.id, _choice_name(choice) if choice else "")
    recipe_text = (_repo_root() / paper.info.recipe).read_text()
    done = json.dumps({"corpus": _corpus_stamp(corpus), "overrides": overrides, "recipe": recipe_text,
                       **text_stamp})
    return done, overrides + text_overrides


def _pretrain(paper: Paper, spec: MethodSpec, mode: str, corpus, text: SharedText, run_dir: Path, progress: bool,
              device: str, log: Log, choice: dict[str, Any] | None = None) -> Path:
    """The finished run folder of ``spec`` (with ``choice`` of its grid), trained unless done."""
    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    done, overrides = _done_stamp(paper, spec, mode, corpus, text, choice)
    if (run_dir / "DONE").is_file() and (run_dir / "DONE").read_text() == done:
        return run_dir  # (a method that reads no image exports no image encoder: DONE is the mark)
    started = run_dir / "STARTED"
    if run_dir.is_dir() and (not started.is_file() or started.read_text() != done):
        import shutil  # a run of other settings (finished or not) is not continued: start again

        shutil.rmtree(run_dir)
    recipe = _repo_root() / paper.info.recipe
    overrides = overrides + [
        f"data.corpus={corpus.root}", f"train.out_dir={run_dir}",
        f"train.progress={'true' if progress else 'false'}", f"train.device={device}"]
    if mode != "data":
        overrides.append("text_encoder.pretrained=null")
    cfg = load_config(PretrainConfig, recipe, overrides)
    log(f"{paper.name}: pretraining {spec.id} ({spec.method}{', ' + _choice_name(choice) if choice else ''})")
    t0 = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(done)
    Trainer(cfg).fit(resume=True)
    (run_dir / "DONE").write_text(done)
    (run_dir / "wall_s.txt").write_text(f"{time.time() - t0:.0f}\n")
    return run_dir


def _pretrain_method(paper: Paper, spec: MethodSpec, mode: str, corpora: dict, text: SharedText, out: Path,
                     progress: bool, device: str, log: Log) -> tuple[Path, dict | None]:
    """(the method's run folder, the record of its validate selection or None).

    With a ``choose_on_validate`` grid every candidate is trained and scored on the
    validate split by the method's own classifier, as its joint arm reads it (the paper's
    "selected according to the best validation set performance"); the best is kept (the
    first on a tie). A single candidate is scored too, so the record always says what the
    kept run reached on validate."""
    candidates = method_candidates(paper, spec, mode)
    if not candidates:
        return _pretrain(paper, spec, mode, corpora[spec.corpus], text, out / "pretrain" / spec.id, progress,
                         device, log), None
    rows = []
    for choice in candidates:
        run_dir = _pretrain(paper, spec, mode, corpora[spec.corpus], text,
                            out / "pretrain" / spec.id / _choice_name(choice), progress, device, log, choice)
        metric, score = _validate_score(paper, spec, run_dir, corpora, device, log)
        rows.append({"choice": choice, "run": str(run_dir), "metric": metric, "validate": score})
    scored = [r for r in rows if r["validate"] is not None]
    if not scored:
        raise ConfigError(f"{paper.name}: no candidate of method {spec.id!r} could be scored on the validate split "
                          f"({[r['choice'] for r in rows]}); see {out / 'pretrain' / spec.id}")
    best = max(scored, key=lambda r: r["validate"])  # max keeps the first of equal scores
    record = {"candidates": rows, "chosen": best["choice"], "metric": best["metric"], "split": "validate"}
    (out / "pretrain" / spec.id / "selection.json").write_text(json.dumps(record, indent=2))
    log(f"{paper.name}: {spec.id}: chose {_choice_name(best['choice'])} ({best['metric']} {best['validate']:.4f} "
        "on validate)")
    return Path(best["run"]), record


def _validate_score(paper: Paper, spec: MethodSpec, run_dir: Path, corpora: dict, device: str,
                    log: Log) -> tuple[str, float | None]:
    """(metric, value) of the run's own classifier on its joint protocol's validate split,
    with the training labels (the only ones model selection may see); cached beside the run."""
    from radpair.evaluation.own_classifier import evaluate_own_classifier

    protocol = joint_protocol(paper, spec.id)
    arm = next((a for a in protocol.arms if a.protocol == "joint" and a.start == spec.id and _available(a)), None)
    if arm is None:
        raise ConfigError(f"{paper.path}: method {spec.id!r} is chosen on validate, but every joint arm starting "
                          "from it is skipped here (na, or a capability is missing)")
    metric = _METRICS.get(protocol.metrics[0], (protocol.metrics[0],))[0]
    cache = run_dir / "validate_score.json"
    stamp = {"done": (run_dir / "DONE").read_text(), "task": protocol.task, "labels": protocol.train_labels,
             "inputs": arm.inputs, "metric": metric, "split": "validate",
             "corpus": _corpus_stamp(corpora[protocol.corpus])}
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("stamp") == stamp:
            return metric, saved["value"]
    log(f"{paper.name}: scoring {run_dir.name} of {spec.id} on the validate split ({arm.inputs} -> {protocol.task})")
    scored = evaluate_own_classifier(run_dir, corpora[protocol.corpus], protocol.task,
                                     test_labels=protocol.train_labels, inputs=arm.inputs, split="validate",
                                     n_bootstrap=0, device=device)
    value = scored["values"].get(metric)
    cache.write_text(json.dumps({"stamp": stamp, "value": value}))
    return metric, value


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
    "epochs": ("frozen_head.max_epochs", "finetune.epochs"),
    "weight_decay": ("finetune.weight_decay", "frozen_head.weight_decay"),
}


# a paper file's downstream optimizer names -> FinetuneSettings/FrozenHeadSettings.optimizer.
# Adam runs as the harness's AdamW: the same update when weight_decay is 0, decoupled decay
# otherwise. Only sgd is emitted, so the transfer settings of papers that train AdamW stay
# as they were.
_DOWNSTREAM_OPTIMIZERS = {"adamw": None, "adam": None, "sgd": "sgd"}


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
            if key == "optimizer" and value is not None:
                if value not in _DOWNSTREAM_OPTIMIZERS:
                    raise ConfigError(f"transfer {protocol.id!r}, arm {arm.id!r}: downstream optimizer {value!r} "
                                      f"has no equivalent here (valid: {', '.join(_DOWNSTREAM_OPTIMIZERS)})")
                if _DOWNSTREAM_OPTIMIZERS[value]:
                    settings["finetune.optimizer"] = settings["frozen_head.optimizer"] = _DOWNSTREAM_OPTIMIZERS[value]
                continue
            if value is None or key not in _HYPER:
                continue  # not stated, or descriptive (early stopping rule, loss)
            for target in _HYPER[key]:
                settings[target] = [value] if target.endswith((".lr", ".weight_decay")) else value
            if key == "max_steps":  # a paper's stated step count is a cap, not a floor
                settings["finetune.min_epochs"] = 0.0
        if hyper.get("epochs") is not None and hyper.get("max_steps") is None:
            settings["finetune.max_steps"] = NO_STEP_CAP  # the paper's epochs alone decide
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


def _joint_labelled_rows(protocol: Protocol, runs: dict[str, Path]) -> int | None:
    """How many training pairs carried a label in the protocol's joint runs (their run_info)."""
    for arm in protocol.arms:
        if arm.protocol == "joint" and arm.start in runs:
            try:
                info = json.loads((runs[arm.start] / "run_info.json").read_text())
                return int(info["labels"]["labelled_rows"])
            except (OSError, ValueError, KeyError):
                continue
    return None


def start_run(paper: Paper, start: str, runs: dict) -> Path:
    """The run folder an arm's ``start`` names: a method id, or ``supervised-pretrained``,
    the paper's supervised method trained on its ``supervised_source`` corpus (the schema
    checks there is exactly such a method)."""
    if start == "supervised-pretrained":
        spec = next(m for m in paper.methods if m.method == "supervised" and m.corpus == "supervised_source")
        return runs[spec.id]
    return runs[start]


def _transfer(paper: Paper, protocol: Protocol, mode: str, corpora: dict, runs: dict[str, Path], out: Path,
              device: str, progress: bool, log: Log, arch: str | None = None) -> list[dict]:
    from radpair.transfer import TransferConfig, run_transfer
    from radpair.transfer.subsets import Budget

    plan = protocol.plan(mode)
    budgets = plan["budgets"]
    results = []
    joint_arms = [a for a in protocol.arms if a.protocol == "joint" and _available(a)]
    if joint_arms:
        results.append(_joint_study(paper, protocol, joint_arms, corpora, runs, out, device, log, mode))
    for k, (arms, settings) in enumerate(transfer_studies(protocol, mode)):
        cfg = TransferConfig(task=protocol.task, repeats=int(plan["repeats"]), device=device, workers=2,
                             train_labels=protocol.train_labels,
                             test_labels=eval_labels(protocol, mode))
        alias: dict[str, str] = {}
        if plan["labelled_fraction"] is not None and budgets.kind == "n" and list(budgets.values) == ["all"]:
            # "every labelled image" when only a share is labelled (Chauhan: 2.7 %): the transfer
            # arms get as many labels as the joint models trained their classifiers on
            count = _joint_labelled_rows(protocol, runs)
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
        cfg.encoders = [f"{s}={start_run(paper, s, runs) / 'image_encoder.safetensors'}" if s != "random"
                        else "random" for s in starts]
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


def eval_labels(protocol: Protocol, mode: str, eval_set: EvalSet | None = None, corpora: dict | None = None) -> str:
    """The test labels of ``eval_set`` (default: the protocol's first evaluation set). A real
    dataset's own labels (``index``: e.g. expert-corrected grades) have no column in a
    synthetic corpus unless the generator writes them (the findings a report states); where
    it does not, the generator's drawn truth stands in for them."""
    if eval_set is None:
        eval_set = protocol.eval_sets[0] if protocol.eval_sets else None
    labels = eval_set.labels if eval_set is not None else ""
    if labels != "index" or mode == "data":
        return labels
    corpus = (corpora or {}).get(eval_set.corpus)
    if corpus is not None:
        from radpair.tasks import load_task

        spec = load_task(protocol.task)
        if set(spec.test_columns or spec.columns) <= set(corpus.index.columns):
            return labels
        if corpus.ground_truth is None:  # a real corpus (--quick --data): its own labels, or a clear error
            return labels
    return "truth"


def _joint_summaries(key: str, eval_id: str, scored: dict) -> list[dict]:
    """A scored classifier as transfer-study summaries: the task-level metrics, each class's
    metrics (``class``), their positives-weighted mean (``class: weighted_mean``) and the
    positive test cases (``metric: positives``; the aggregate rows count them all)."""
    base = {"arm": key, "budget": "all", "eval": eval_id}
    rows = [{**base, "metric": m, "mean": v, "test_ci_mean": scored["ci"].get(m)} for m, v in scored["values"].items()]
    positives = scored.get("n_positive", {})
    for cls, values in scored.get("per_class", {}).items():
        cis = scored.get("per_class_ci", {}).get(cls, {})
        rows += [{**base, "class": cls, "metric": m, "mean": v, "test_ci_mean": cis.get(m)} for m, v in values.items()]
    # a class without positives has no AUC (listed as skipped), but its count of 0 is a result
    rows += [{**base, "class": cls, "metric": "positives", "mean": n} for cls, n in positives.items()]
    weights = {c: positives.get(c, 0) for c in scored.get("per_class", {})}
    for metric in {m for v in scored.get("per_class", {}).values() for m in v}:
        pairs = [(v[metric], weights[c]) for c, v in scored["per_class"].items()
                 if v.get(metric) is not None and weights[c] > 0]
        if pairs:
            rows.append({**base, "class": "weighted_mean", "metric": metric,
                         "mean": sum(v * w for v, w in pairs) / sum(w for _, w in pairs)})
    total = sum(positives.values())
    rows += [{**base, "class": agg, "metric": "positives", "mean": total} for agg in ("mean", "weighted_mean")]
    return rows


def _joint_study(paper: Paper, protocol: Protocol, arms: list[Arm], corpora: dict, runs: dict[str, Path], out: Path,
                 device: str, log: Log, mode: str) -> dict:
    """The ``joint`` arms: each start's own classifier reading the arm's inputs, on every
    evaluation set of the protocol, as a study whose summaries look like a transfer
    study's (budget ``all``, one repeat). Scores are cached per arm and set against the
    run's DONE stamp, so a relaunch does not decode the test images again."""
    from radpair.evaluation.own_classifier import evaluate_own_classifier

    summaries, arm_keys = [], {}
    probabilities: dict = {}  # one decoding of a run's test images serves every label source
    folder = out / "transfer" / protocol.id / "joint"
    folder.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        key = f"{arm.start}:joint" if arm.inputs == "image" else f"{arm.start}:joint:{arm.inputs}"
        arm_keys[key] = arm.id
        for es in protocol.eval_sets or (None,):
            labels = eval_labels(protocol, mode, es, corpora) or None
            corpus = corpora[es.corpus if es else protocol.corpus]
            split = es.split if es else "test"
            eval_id = es.id if es else ""
            stamp = {"done": (runs[arm.start] / "DONE").read_text(), "task": protocol.task, "labels": labels,
                     "inputs": arm.inputs, "split": split, "corpus": _corpus_stamp(corpus)}
            cache = folder / f"{arm.id}.{eval_id or 'test'}.json"
            scored = None
            if cache.is_file():
                saved = json.loads(cache.read_text())
                scored = saved["scored"] if saved.get("stamp") == stamp else None
            if scored is None:
                log(f"{paper.name}: scoring {arm.start}'s own classifier ({arm.inputs}) on {protocol.task}"
                    + (f", {es.id}" if es else ""))
                scored = evaluate_own_classifier(runs[arm.start], corpus, protocol.task, test_labels=labels,
                                                 inputs=arm.inputs, split=split, device=device,
                                                 cache=probabilities)
                cache.write_text(json.dumps({"stamp": stamp, "scored": scored}))
            summaries += _joint_summaries(key, eval_id, scored)
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


# a paper file's caption metric names -> radpair.evaluation.generation's (CE-F1: the CheXpert labeler's
# micro F1 over its 14 observations, uncertain read as positive, as R2Gen-style papers report it)
_GENERATION = {"rouge_l": "rougeL", "ce_f1": "ce_upos_14_micro_f1"}


def _evaluations(paper: Paper, corpora: dict, runs: dict[str, Path], out: Path, device: str,
                 log: Log) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """(``{evaluation id: {method id: metrics}}``, ``{evaluation id: details}``) for the
    evaluations of the pretrained models; details hold what a table cannot (paired
    differences, why a metric is missing)."""
    from radpair.evaluation.matching import evaluate_matching

    from radpair.replicate.registry import CAPABILITIES

    found: dict[str, dict[str, dict]] = {}
    details: dict[str, dict] = {}
    for ev in paper.evaluations:
        if not all(c in CAPABILITIES for c in ev.requires):
            continue  # listed as skipped by paper_status
        if ev.kind == "generation":
            found[ev.id], details[ev.id] = _generation(paper, ev, corpora[ev.corpus], runs, out, device, log)
            continue
        for method_id in ev.methods:
            log(f"{paper.name}: {ev.kind} of {method_id} on the {ev.split} split")
            result = evaluate_matching(runs[method_id], corpora[ev.corpus], split=ev.split, device=device)
            found.setdefault(ev.id, {})[method_id] = result.metrics
    return found, details


def _text_policy(run_dir: Path) -> str:
    """The section policy of the report the run learnt to write (its ``report`` text field)."""
    from radpair.evaluation.joint import run_parts
    from radpair.methods import method_needs

    _, config, method_cfg, _, _ = run_parts(run_dir)
    fields = {f.name: f for f in method_needs(method_cfg).text_fields}
    field = fields.get("report") or next(iter(fields.values()), None)
    return (field.sections if field is not None else None) or (config.get("data") or {}).get("text_sections") or "full"


def _generation(paper: Paper, ev, corpus, runs: dict[str, Path], out: Path, device: str,
                log: Log) -> tuple[dict[str, dict], dict]:
    """Reports written by each method for the ``ev.split`` images (greedy decoding up to the
    length of the training reports), scored against the written reports cut to the
    section policy the method learnt to write, each method with its bootstrap CIs, and
    every later method paired against the first (``later - first``, same draws).
    Generated reports and scores are cached against the run's DONE stamp."""
    from radpair.evaluation.generation import evaluate_generation
    from radpair.evaluation.report_metrics import SCORING_VERSION
    from radpair.generation.decoding import DecodingConfig
    from radpair.generation.generate import generate_reports

    folder = out / "evaluations" / ev.id
    folder.mkdir(parents=True, exist_ok=True)
    frames, policies = {}, {}
    for method_id in ev.methods:
        run_dir = runs[method_id]
        csv = folder / f"{method_id}.csv"
        stamp_file = folder / f"{method_id}.stamp"
        stamp = json.dumps({"done": (run_dir / "DONE").read_text(), "split": ev.split, "corpus": _corpus_stamp(corpus),
                            "decoding": "greedy"})
        if not (csv.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp):
            log(f"{paper.name}: {method_id} writes reports for the {ev.split} split")
            generated = generate_reports(run_dir, corpus, split=ev.split, decoding=DecodingConfig(), device=device)
            generated.frame.to_csv(csv, index=False)
            stamp_file.write_text(stamp)
        import pandas as pd

        frames[method_id] = pd.read_csv(csv, dtype={"image_id": str}, keep_default_na=False)
        policies[method_id] = _text_policy(run_dir)
    found: dict[str, dict] = {}
    detail: dict[str, Any] = {"split": ev.split, "decoding": "greedy", "folder": str(folder), "methods": {},
                              "differences": {}}
    first = ev.methods[0]
    for method_id in ev.methods:
        other = first if method_id != first and policies[method_id] == policies[first] else None
        stamp = json.dumps({"pred": (folder / f"{method_id}.stamp").read_text(), "metrics": list(ev.metrics),
                            "other": (folder / f"{other}.stamp").read_text() if other else None,
                            "ref_sections": policies[method_id], "scoring_version": SCORING_VERSION})
        cache = folder / f"{method_id}.scored.json"
        saved = json.loads(cache.read_text()) if cache.is_file() else {}
        if saved.get("stamp") != stamp:
            log(f"{paper.name}: scoring {method_id}'s reports" + (f" (paired against {other})" if other else ""))
            result = evaluate_generation(frames[method_id], corpus.root, ref_sections=policies[method_id],
                                         out_dir=folder / method_id, compare=frames[other] if other else None)
            cells = {}
            for metric in ev.metrics:
                name = _GENERATION.get(metric, metric)
                value = result.metrics.get(name)
                lo, hi = result.intervals.get(name, (None, None))
                cells[metric] = None if value is None or not math.isfinite(value) else [
                    float(value), *(None if v is None or not math.isfinite(v) else float(v) for v in (lo, hi))]
            names = {_GENERATION.get(m, m): m for m in ev.metrics}
            saved = {"stamp": stamp, "cells": cells,
                     "detail": {"ref_sections": policies[method_id], "n_reports": result.n_reports,
                                "meteor_reason": result.meteor_reason, "ce_reason": result.ce_reason,
                                "notes": list(result.notes)},
                     "differences": [{**d.to_dict(), "metric": names[d.metric]} for d in result.differences
                                     if d.metric in names]}
            cache.write_text(json.dumps(saved, allow_nan=False, default=_finite))
        found[method_id] = saved["cells"]
        detail["methods"][method_id] = saved["detail"]
        if other:
            detail["differences"][f"{method_id} - {other}"] = saved["differences"]
    return found, detail


def _finite(x: Any) -> Any:
    """numpy scalars as plain numbers for json (non-finite ones as null)."""
    x = float(x)
    return x if math.isfinite(x) else None


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
                if "evaluation" in sel:
                    metrics = (evaluations or {}).get(sel["evaluation"], {}).get(sel.get("method"), {})
                    name = _MATCHING.get(sel.get("metric"), sel.get("metric"))
                    if metrics.get(name) is not None:
                        value = metrics[name]
                        cells.setdefault(row.id, {})[col.id] = (tuple(value) if isinstance(value, (list, tuple))
                                                                else (value, None, None))
                    continue
                if "protocol" not in sel or sel["protocol"] not in transfer:
                    continue
                budget = sel.get("budget")
                protocol = paper.protocol(sel["protocol"])
                kind = protocol.budgets.kind
                key = None if budget is None else (Budget.fraction(budget).key if kind == "fractions"
                                                   else Budget.parse(budget).key)
                # summaries without an ``eval`` are of the first evaluation set (transfer studies score only it)
                first_eval = protocol.eval_sets[0].id if protocol.eval_sets else ""
                cls = sel.get("class")
                metric = sel.get("metric")
                # the mean over classes is the task-level macro metric (its CI comes with it); a class, the
                # weighted mean and the positives counts are rows with ``class`` (joint studies write them)
                by_class = cls is not None and (cls != "mean" or metric == "positives")
                for study in transfer[sel["protocol"]]:
                    arm_key = next((k for k, v in study["arms"].items() if v == sel.get("arm")), None)
                    if arm_key is None:
                        continue
                    wanted = study.get("budget_alias", {}).get(key, key)
                    rows = [s for s in study["results"]["summaries"]
                            if s["arm"] == arm_key and s.get("class") == (cls if by_class else None)
                            and s.get("eval", first_eval) == sel.get("eval", first_eval)]
                    name = metric
                    if not by_class:
                        present = {s["metric"] for s in rows}
                        name = next((m for m in _METRICS.get(metric, ()) if m in present), metric)
                    for s in rows:
                        if s["metric"] == name and (key is None or s["budget"] == wanted):
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


def _selection_lines(paper: Paper, selections: dict[str, dict]) -> list[str]:
    """The validate scores of every candidate of the settings chosen on validate."""
    if not selections:
        return []
    lines = ["## Settings chosen on the validate split", ""]
    for method_id, record in selections.items():
        label = paper.method(method_id).label
        lines.append(f"`{method_id}` ({label}): {record['metric']} of its own classifier on the validate split "
                     "(training labels); the test split is scored only for the kept candidate.")
        lines += ["", "| candidate | validate | kept |", "|---|---|---|"]
        for row in record["candidates"]:
            value = "–" if row["validate"] is None else f"{row['validate']:.4f}"
            lines.append(f"| {_choice_name(row['choice'])} | {value} | "
                         f"{'yes' if row['choice'] == record['chosen'] else ''} |")
        if len(record["candidates"]) == 1:
            lines += ["", "One candidate in this mode: nothing is chosen, its validate score is shown for reference."]
        lines.append("")
    return lines


def _missing_reasons(table, details: dict[str, dict]) -> list[str]:
    """Why a generation metric has no value (METEOR without Java, CE without the labeler), and
    the scorer's notes (e.g. METEOR intervals on the mean segment score)."""
    evaluation = table.select.get("evaluation")
    if evaluation not in details:
        return []
    lines = []
    for method_id, d in details[evaluation]["methods"].items():
        if d.get("meteor_reason"):
            lines.append(f"METEOR of `{method_id}` not computed: {d['meteor_reason']}.")
        if d.get("ce_reason"):
            lines.append(f"CE-F1 of `{method_id}` not computed: {d['ce_reason']}.")
        lines += [f"`{method_id}`: {note}." for note in d.get("notes") or []]
    return lines


def _difference_lines(paper: Paper, details: dict[str, dict]) -> list[str]:
    """Paired differences of generated reports (same references, same bootstrap draws)."""
    lines = []
    for ev_id, d in details.items():
        for pair, diffs in d.get("differences", {}).items():
            if not diffs:
                continue
            lines += [f"## Paired difference of generated reports: {pair} ({ev_id}, {d['split']} split, "
                      f"{d['decoding']} decoding)", "",
                      "| metric | difference | 95% CI | p |", "|---|---|---|---|"]
            for x in diffs:
                if x["diff"] is None:
                    lines.append(f"| {x['metric']} | – | – | – |")
                    continue
                star = " *" if (x["ci_low"] or 0) > 0 or (x["ci_high"] or 0) < 0 else ""
                lo, hi, p = (("–" if v is None else f"{v:.{k}f}") for v, k in
                             ((x["ci_low"], 4), (x["ci_high"], 4), (x["p_value"], 3)))
                name = x["metric"] + (" (mean segment)" if x.get("basis") == "mean segment" else "")
                lines.append(f"| {name} | {x['diff']:+.4f}{star} | [{lo}, {hi}] | {p} |")
            lines += ["", "\\* the 95% interval excludes 0.", ""]
    return lines


def run_paper(paper: Paper, mode: str, data: str | Path | None, out: str | Path, progress: bool = True,
              device: str = "cpu", log: Log = print) -> Path:
    """Pretrain the paper's methods, run its transfer arms and write its tables beside the
    published numbers under ``out``; ``mode`` is ``quick``, ``cpu`` or ``data``.
    Returns the path of ``report.md``."""
    import radpair.transfer  # noqa: F401 - registers what the transfer harness can run
    from radpair.replicate.registry import CAPABILITIES, paper_status
    from radpair.replicate.shared_text import paper_vocabulary
    from radpair.replicate.tables import evaluate_claims, render_table

    vocabulary = paper_vocabulary(paper, mode)  # one tokenizer for all methods: a conflict is a fault of the file
    status = paper_status(paper)
    if not status.runnable:
        raise ConfigError(f"{paper.name} cannot run yet; {status.summary()}")
    for ev in paper.evaluations:
        if ev.kind not in ("matching", "generation") and all(c in CAPABILITIES for c in ev.requires):
            raise ConfigError(f"{paper.name}: evaluation kind {ev.kind!r} is not connected to the runner yet")
    plan = word_vector_plan(paper, mode)  # word vectors that cannot fit a run stop here, before any work
    for protocol in paper.transfer:  # downstream settings the harness cannot honour stop here too
        transfer_studies(protocol, mode)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    roles = ({m.corpus for m in paper.methods} | {p.corpus for p in paper.transfer}
             | {e.corpus for p in paper.transfer for e in p.eval_sets} | {e.corpus for e in paper.evaluations})
    corpora = {role: _corpus(paper, role, mode, data, out, log) for role in sorted(roles)}
    text = _shared_text(paper, mode, corpora["main"], out, log, vocabulary, plan)
    runs: dict[str, Path] = {}
    selections: dict[str, dict] = {}
    for m in paper.methods:
        runs[m.id], record = _pretrain_method(paper, m, mode, corpora, text, out, progress, device, log)
        if record is not None:
            selections[m.id] = record
    arch = next((o.split("=", 1)[1] for o in pretrain_overrides(paper, paper.methods[0], mode)
                 if o.startswith("image_encoder.name=")), None) if paper.methods else None
    transfer = {p.id: _transfer(paper, p, mode, corpora, runs, out, device, progress, log, arch)
                for p in paper.transfer}
    evaluations, eval_details = _evaluations(paper, corpora, runs, out, device, log)
    measured = measured_tables(paper, transfer, evaluations)
    claims = evaluate_claims(paper, measured)
    parts = [f"# {paper.name}: {paper.info.title}", "",
             f"Mode `{mode}`; run folder `{out}`; {time.time() - t0:.0f} s this launch.", ""]
    for p in paper.transfer:
        for es in p.eval_sets:
            if eval_labels(p, mode, es, corpora) != es.labels:
                parts += [f"Protocol `{p.id}`: the paper's `{es.labels}` test labels ({es.label}) are the synthetic "
                          "corpus's drawn truth here.", ""]
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
    parts += _selection_lines(paper, selections)
    for table in paper.tables:
        parts += [render_table(paper, table.id, measured.get(table.id)), *_missing_reasons(table, eval_details), ""]
    parts += _difference_lines(paper, eval_details)
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
        "selection": selections, "evaluations": eval_details,
        "transfer": {p: [s["folder"] for s in studies] for p, studies in transfer.items()}}, indent=2))
    log(f"{paper.name}: tables and claims in {report}")
    return report
