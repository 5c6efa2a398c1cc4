"""The sample figure of docs/synthetic.md: the same patients under two generator presets.

Issue 10 asks that the calibrated corpus stay chest-like, and that someone look at it.
This draws one small corpus per preset with the same seed (patients, findings and views
are drawn from the same random streams, so column k shows one patient under both
presets) and picks, for each (view, finding) column, the first image whose only finding
is that one (edema: grade 2 or more, so the sign is there to see).

    python benchmarks/synth_samples.py --out docs/figures/synth_samples.png
    python benchmarks/synth_samples.py --presets easy default hard --size 128 --out X.png

Takes about 20 s on 2 cores.

``--shift`` draws the figure of the shifted corpus instead (TIMNet's pediatric stand-in):
per preset, the first four frontal images with no finding and the first four whose only
finding is consolidation. The presets draw different cohorts, so the rows show different
patients::

    python benchmarks/synth_samples.py --shift --presets default pediatric_shift --n 200 --size 128 \
        --out docs/figures/synth_pediatric_shift.png
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

FINDING_COLUMNS = ("edema", "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "atelectasis",
                   "nodule")
PANELS = (("PA", None), ("PA", "edema"), ("PA", "cardiomegaly"), ("PA", "pleural_effusion"),
          ("AP", "consolidation"), ("AP", "atelectasis"))


def pick_rows(truth_csv: Path) -> list[tuple[int, str]]:
    """Row numbers (in ground_truth.csv order = images.npy order) for each panel."""
    with open(truth_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = []
    for view, finding in PANELS:
        for i, r in enumerate(rows):
            if r["view"] != view:
                continue
            present = {f for f in FINDING_COLUMNS if r[f] == "1"}
            if finding is None and not present and r["support_devices"] == "0":
                picked.append((i, f"{view}: normal"))
                break
            if finding is not None and present == {finding} and (finding != "edema" or int(r["edema_severity"]) >= 2):
                picked.append((i, f"{view}: {finding.replace('_', ' ')}"))
                break
        else:
            raise SystemExit(f"no {view} image with only {finding or 'no finding'}; raise --n")
    return picked


def pick_shift_rows(truth_csv: Path, per_kind: int = 4) -> list[tuple[int, str]]:
    """Rows of the first ``per_kind`` frontal normals and consolidation-only frontals."""
    with open(truth_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked: dict[str, list[tuple[int, str]]] = {"normal": [], "consolidation": []}
    for i, r in enumerate(rows):
        present = {f for f in FINDING_COLUMNS if r[f] == "1"}
        kind = "normal" if not present else ("consolidation" if present == {"consolidation"} else None)
        if r["view"] != "LATERAL" and kind is not None and len(picked[kind]) < per_kind:
            picked[kind].append((i, f"{r['view']}: {kind}"))
    if any(len(v) < per_kind for v in picked.values()):
        raise SystemExit(f"fewer than {per_kind} frontal normals or consolidations in {truth_csv}; raise --n")
    return picked["normal"] + picked["consolidation"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["classic", "default"])
    ap.add_argument("--n", type=int, default=600, help="images per preset corpus")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/figures/synth_samples.png")
    ap.add_argument("--shift", action="store_true",
                    help="normal vs consolidation frontals per preset, each preset's own patients")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radpair.data.synth import generate_corpus, load_synth_config

    with tempfile.TemporaryDirectory() as tmp:
        images, picks = {}, None
        for preset in args.presets:
            root = Path(tmp) / preset
            generate_corpus(root, n_images=args.n, size=args.size, seed=args.seed, workers=2,
                            config=load_synth_config(preset))
            if args.shift:  # each preset its own picks: the cohorts differ
                picks = picks or {}
                picks[preset] = pick_shift_rows(root / "ground_truth.csv")
            else:  # the picks come from the first preset so every row shows the same patients
                picks = picks or pick_rows(root / "ground_truth.csv")
            images[preset] = np.load(root / "images.npy", mmap_mode="r")
        n_cols = len(next(iter(picks.values())) if args.shift else picks)
        fig, axes = plt.subplots(len(args.presets), n_cols, figsize=(2 * n_cols, 2.1 * len(args.presets)),
                                 squeeze=False)
        for r, preset in enumerate(args.presets):
            for c, (row, title) in enumerate(picks[preset] if args.shift else picks):
                ax = axes[r][c]
                ax.imshow(np.asarray(images[preset][row]).squeeze(), cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 or args.shift:
                    ax.set_title(title, fontsize=9)
                if c == 0:
                    ax.set_ylabel("default (calibrated)" if preset == "default" else preset, fontsize=9)
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
