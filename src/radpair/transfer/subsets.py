"""Label budgets, the patient-level subsets drawn for them, and manifests that pin them.

"What if only N images had been labelled?" is answered by drawing N labelled training
images, and, for choosing hyper-parameters honestly, a validation draw from the
``validate`` split: by default of the same size (a budget of N spends 2N labels, as it
would in a hospital that must also check its model), or the whole split with
``val="full"``. Why this module rather than ``numpy.random.choice``:

* Patient level. Patients are drawn in random order and all their eligible images are
  taken until the budget is filled (the last patient may contribute part of its images),
  so a subset is what a reader labelling whole patients would produce.
* Stratified where the budget allows. A random 10 images often lack any positive of a
  rare finding, making that class unlearnable and unscorable on validation. After the
  random draw, rows that provide a missing requirement (a positive and a negative of each
  class; each level of a categorical task) are swapped in for rows nothing depends on,
  rarest requirement first. What could not be met is reported, never hidden.
* Reproducible and shared. Draw (budget, repeat) comes from a generator seeded by
  (seed, budget, repeat), independent of which other budgets are run, and every arm of a
  comparison trains on the same images and selects on the same validation draw.
* Pinned. Each draw is saved as a manifest of image ids with a SHA-256, so ``--manifest``
  reruns exactly those subsets on another machine or after a code change.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from radpair.errors import ConfigError, DataError
from radpair.evaluation.stratify import stratify
from radpair.tasks.schema import TaskLabels

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Budget:
    """A label budget: a count of images, ``all``, or a fraction of the training pool."""

    kind: str  # "count" | "all" | "fraction"
    value: float = 0.0

    @classmethod
    def parse(cls, text: Any) -> "Budget":
        if isinstance(text, Budget):
            return text
        s = str(text).strip().lower()
        if s == "all":
            return cls("all", 1.0)
        if s.endswith("%"):
            try:
                return cls.fraction(float(s[:-1]) / 100.0)
            except ValueError:
                raise ConfigError(f"label budget {text!r} must be a positive integer, 'all' or a percentage") from None
        try:
            n = int(s)
        except ValueError:
            raise ConfigError(f"label budget {text!r} must be a positive integer, 'all' or a percentage") from None
        if n < 1:
            raise ConfigError(f"label budget {text!r} must be at least 1")
        return cls("count", float(n))

    @classmethod
    def fraction(cls, f: Any) -> "Budget":
        try:
            v = float(f)
        except (TypeError, ValueError):
            raise ConfigError(f"label fraction {f!r} is not a number") from None
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"label fraction {f!r} must lie in (0, 1]")
        return cls("fraction", v)

    @property
    def key(self) -> str:
        """Stable text form for tables and JSON keys: ``10``, ``all``, ``0.5%``."""
        if self.kind == "all":
            return "all"
        if self.kind == "count":
            return str(int(self.value))
        return f"{self.value * 100:.4g}%"

    @property
    def file_key(self) -> str:
        if self.kind == "fraction":
            return "p" + f"{self.value * 100:.4g}".replace(".", "_")
        return "n" + self.key if self.kind == "count" else "all"

    @property
    def sort_value(self) -> float:
        return {"count": self.value, "all": math.inf}.get(self.kind, self.value)

    def size(self, pool: int) -> int:
        """Images drawn from a pool of ``pool`` usable rows (at least 1)."""
        if self.kind == "all":
            return pool
        if self.kind == "count":
            return min(pool, int(self.value))
        return min(pool, max(1, int(round(self.value * pool))))

    def seed_code(self) -> int:
        return {"all": 0, "count": int(self.value)}.get(self.kind, 10**9 + int(round(self.value * 1e6)))


def parse_budgets(n: str | Sequence[Any] | None = None, fractions: str | Sequence[Any] | None = None) -> list[Budget]:
    """Budgets from ``--n 10,100,all`` and/or ``--fractions 0.005,0.01``; sorted, unique."""

    def items(v: Any) -> list[str]:
        if v is None:
            return []
        if isinstance(v, str):
            return [p for p in (x.strip() for x in v.split(",")) if p]
        return [str(x) for x in v]

    out = [Budget.parse(x) for x in items(n)] + [Budget.fraction(x) for x in items(fractions)]
    if not out:
        raise ConfigError("no label budget given (--n and/or --fractions)")
    # budgets are identified by their key (folders, manifests, tables): equal keys are one budget
    uniq = list({b.key: b for b in out}.values())
    return sorted(uniq, key=lambda b: (b.kind == "fraction", b.sort_value))


# ---- drawing -----------------------------------------------------------------------------------
def _patient_order_draw(pool: np.ndarray, patients: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Whole patients in random order until ``size`` images; the last one may be partial."""
    pats, inverse = np.unique(patients[pool], return_inverse=True)
    order = rng.permutation(pats.size)
    # rows of each patient, in a random order of their own
    jitter = rng.random(pool.size)
    by_patient = np.lexsort((jitter, inverse))  # grouped by patient code, shuffled inside
    starts = np.searchsorted(inverse[by_patient], np.arange(pats.size))
    ends = np.append(starts[1:], pool.size)
    chosen: list[np.ndarray] = []
    have = 0
    for p in order:
        rows = pool[by_patient[starts[p]:ends[p]]]
        take = min(rows.size, size - have)
        chosen.append(rows[:take])
        have += take
        if have >= size:
            break
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Draw:
    """Rows (positions into the candidate rows passed in) and what could not be met."""

    rows: np.ndarray
    pool_size: int
    lacking: list[str] = field(default_factory=list)


def draw_rows(labels: TaskLabels, patients: np.ndarray, size: int | None, rng: np.random.Generator) -> Draw:
    """A stratified patient-level draw of ``size`` usable rows (``None``: the whole pool)."""
    patients = np.asarray(patients).astype(str)
    if patients.shape != (len(labels),):
        raise DataError(f"patients must have one entry per row ({len(labels)}); got {patients.shape}")
    pool = np.flatnonzero(labels.usable_rows)
    if pool.size == 0:
        raise DataError("no row has a usable label; nothing to draw")
    has, names = labels.requirements()
    if size is None or size >= pool.size:
        chosen = pool
    else:
        chosen = _patient_order_draw(pool, patients, int(size), rng)
        chosen = stratify(has, pool, chosen, rng)
    met = has[chosen].any(axis=0)
    possible = has[pool].any(axis=0)
    lacking = [names[k] for k in np.flatnonzero(~met)]
    lacking = [f"{n} (none in the pool)" if not possible[k] else n
               for n, k in zip(lacking, np.flatnonzero(~met))]
    return Draw(np.sort(chosen).astype(np.int64), int(pool.size), lacking)


def draw_generator(seed: int, budget: Budget, repeat: int, stream: int) -> np.random.Generator:
    """Stream 0 draws training rows, stream 1 the validation rows of the same (budget, repeat)."""
    return np.random.default_rng([int(seed), budget.seed_code(), int(repeat), int(stream)])


# ---- manifests ----------------------------------------------------------------------------------
def ids_sha256(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()


@dataclass
class SubsetManifest:
    """The images of one (budget, repeat): training subset and validation draw, by image id."""

    task: str
    budget: str
    repeat: int
    seed: int
    train_ids: list[str]
    val_ids: list[str]
    val_mode: str = "matched"
    train_pool: int = 0
    val_pool: int = 0
    lacking_train: list[str] = field(default_factory=list)
    lacking_val: list[str] = field(default_factory=list)

    @property
    def train_sha256(self) -> str:
        return ids_sha256(self.train_ids)

    @property
    def val_sha256(self) -> str:
        return ids_sha256(self.val_ids)

    @property
    def file_name(self) -> str:
        return f"{Budget.parse(self.budget).file_key}-r{self.repeat}.json"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "radpair-subset-manifest", "version": MANIFEST_VERSION, "task": self.task,
            "budget": self.budget, "repeat": self.repeat, "seed": self.seed, "val_mode": self.val_mode,
            "train": {"n": len(self.train_ids), "pool": self.train_pool, "sha256": self.train_sha256,
                      "lacking": self.lacking_train, "image_ids": list(self.train_ids)},
            "val": {"n": len(self.val_ids), "pool": self.val_pool, "sha256": self.val_sha256,
                    "lacking": self.lacking_val, "image_ids": list(self.val_ids)},
        }

    def save(self, folder: str | Path) -> Path:
        from radpair.data.corpus import atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.file_name
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SubsetManifest":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            if d.get("format") != "radpair-subset-manifest":
                raise DataError(f"{path}: not a radpair subset manifest")
            m = cls(task=d["task"], budget=str(d["budget"]), repeat=int(d["repeat"]), seed=int(d["seed"]),
                    train_ids=[str(i) for i in d["train"]["image_ids"]], val_ids=[str(i) for i in d["val"]["image_ids"]],
                    val_mode=d.get("val_mode", "matched"), train_pool=int(d["train"].get("pool", 0)),
                    val_pool=int(d["val"].get("pool", 0)), lacking_train=list(d["train"].get("lacking", [])),
                    lacking_val=list(d["val"].get("lacking", [])))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: unreadable subset manifest ({exc})") from None
        for part in ("train", "val"):
            if d[part].get("sha256") and d[part]["sha256"] != getattr(m, f"{part}_sha256"):
                raise DataError(f"{path}: the {part} image ids do not match their SHA-256; the file was edited")
        return m


def load_manifests(folder: str | Path) -> dict[tuple[str, int], SubsetManifest]:
    """Every manifest in ``folder`` keyed by (budget key, repeat)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"manifest folder {str(folder)!r} does not exist")
    found = {}
    for path in sorted(folder.glob("*.json")):
        if path.name == "index.json":
            continue
        m = SubsetManifest.load(path)
        found[(Budget.parse(m.budget).key, m.repeat)] = m
    if not found:
        raise DataError(f"{folder}: no subset manifests (*.json written by radpair transfer)")
    return found


def rows_for_ids(ids: Sequence[str], id_to_row: dict[str, int], where: str) -> np.ndarray:
    missing = [i for i in ids if i not in id_to_row]
    if missing:
        raise DataError(f"{where}: {len(missing)} image id(s) are not eligible rows of this corpus and task "
                        f"(first: {missing[:5]}); was the manifest made on another corpus?")
    return np.sort(np.array([id_to_row[i] for i in ids], dtype=np.int64))


__all__ = ["Budget", "Draw", "SubsetManifest", "draw_generator", "draw_rows", "ids_sha256", "load_manifests",
           "parse_budgets", "rows_for_ids"]
