"""`radpair predict` throughput against the model-only forward rate, and its memory growth.

Issue 13's bars, ResNet-18 at 224 px on CPU:
* on 1,000 PNGs of 256 x 256 and on 200 16-bit DICOM files written here, `radpair predict`
  (decode, resize, forward, feature distance, CSV) runs at >= 80 % of the rate of the
  forward pass alone on already-prepared tensors, measured in the same run (the forward
  rate is measured before and after each predict pass and averaged, since the machine may
  be shared);
* peak RSS at 10,000 images is within 100 MiB of the peak at 1,000 (each size runs in a
  fresh process; the 1,000 PNGs are given several times over, which exercises the same
  streaming path without writing 10,000 files). ``--rss-sizes`` picks the sizes.

    python benchmarks/predict_throughput.py --threads 2
    python benchmarks/predict_throughput.py --threads 2 --rss-sizes 1000,3000,10000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_package(out: Path, size: int, seed: int) -> Path:
    import torch

    from radpair.data.io import NormalisationSpec
    from radpair.data.tensors import PIXEL_MEAN, PIXEL_STD
    from radpair.models.image_encoders import IMAGE_ENCODERS
    from radpair.package.export import export_model
    from radpair.package.model import EncoderHeadModel, StandardisedLinear
    from radpair.package.ood import fit_feature_stats

    names = ["edema", "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "atelectasis", "nodule"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = IMAGE_ENCODERS.build("resnet18")
        model = EncoderHeadModel(encoder, StandardisedLinear(encoder.out_dim, len(names)), "pooled", len(names), False)
    stats = fit_feature_stats(np.random.default_rng(seed).normal(size=(1000, encoder.out_dim)), seed)
    record = {"image_size": [size, size], "normalisation": NormalisationSpec().to_dict(), "pixel_mean": PIXEL_MEAN,
              "pixel_std": PIXEL_STD, "source": "benchmark"}
    return export_model(out, model.eval(), names, record, feature_stats=stats, overwrite=True, log=lambda s: None)


def _film(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth chest-film-like field plus noise (PNG compresses it like a radiograph, not like noise)."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.cos(3 * (x - 0.5)) * np.cos(2 * (y - 0.4)) - 0.2 * np.exp(-((x - 0.35) ** 2 + (y - 0.5) ** 2) * 20)
    return np.clip(base + rng.normal(0, 0.03, (size, size)), 0, 1)


def write_pngs(folder: Path, n: int, size: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((_film(rng, size) * 255).astype(np.uint8)).save(folder / f"img{i:05d}.png")


def write_dicoms(folder: Path, n: int, size: int, seed: int) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"img{i:05d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.ViewPosition = 1, "MONOCHROME2", "PA"
        ds.StudyInstanceUID = generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PixelData = (_film(rng, size) * 65535).astype(np.uint16).tobytes()
        ds.save_as(str(path), enforce_file_format=True)


def forward_rate(pkg, batch: int, size: int, n_batches: int) -> float:
    """Images/s of the packaged model alone on prepared tensors (what predict also computes)."""
    import torch

    x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pkg.model.predict(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n_batches):
            pkg.model.predict(x)
    return batch * n_batches / (time.perf_counter() - t0)


def predict_rate(pkg, folder: Path, out: Path, batch: int, workers: int | None) -> tuple[float, int, float]:
    from radpair.package import predict

    t0 = time.perf_counter()
    s = predict(pkg, [folder], out, batch_size=batch, workers=workers, log=lambda m: None)
    secs = time.perf_counter() - t0
    return s.n_predicted / secs, s.n_predicted, secs


def child_rss(args: argparse.Namespace) -> None:
    import resource

    import torch

    from radpair.package import load_package, predict

    torch.set_num_threads(args.threads)
    pkg = load_package(args.child_package)
    inputs = [args.child_folder] * args.child_repeats
    s = predict(pkg, inputs, Path(args.child_out), batch_size=args.batch, workers=args.workers, log=lambda m: None)
    print(json.dumps({"n": s.n_predicted, "seconds": s.seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: predict's)")
    p.add_argument("--n-png", type=int, default=1000)
    p.add_argument("--n-dicom", type=int, default=200)
    p.add_argument("--png-size", type=int, default=256)
    p.add_argument("--dicom-size", type=int, default=512)
    p.add_argument("--size", type=int, default=224, help="model input size")
    p.add_argument("--rss-sizes", default="1000,3000", help="image counts for the RSS comparison ('' to skip)")
    p.add_argument("--forward-batches", type=int, default=8)
    p.add_argument("--workdir", default=None, help="keep files here (default: a temp folder)")
    p.add_argument("--json", default=None, help="write the numbers here")
    p.add_argument("--child-package", help=argparse.SUPPRESS)
    p.add_argument("--child-folder", help=argparse.SUPPRESS)
    p.add_argument("--child-repeats", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_package:
        return child_rss(args)
    import torch

    torch.set_num_threads(args.threads)
    from radpair.package import load_package

    work = Path(args.workdir or tempfile.mkdtemp(prefix="predict_bench_"))
    t0 = time.perf_counter()
    pkg_dir = build_package(work / "pkg", args.size, 0)
    write_pngs(work / "png", args.n_png, args.png_size, 1)
    write_dicoms(work / "dicom", args.n_dicom, args.dicom_size, 2)
    print(f"setup {time.perf_counter() - t0:.0f}s in {work}", flush=True)
    pkg = load_package(pkg_dir)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    results: dict = {"cpu": cpu, "threads": args.threads, "batch": args.batch, "model": "resnet18",
                     "input": args.size, "runs": {}}
    for name, folder in (("png", work / "png"), ("dicom", work / "dicom")):
        before = forward_rate(pkg, args.batch, args.size, args.forward_batches)
        rate, n, secs = predict_rate(pkg, folder, work / f"{name}.csv", args.batch, args.workers)
        after = forward_rate(pkg, args.batch, args.size, args.forward_batches)
        fwd = (before + after) / 2
        results["runs"][name] = {"images": n, "predict_seconds": round(secs, 2), "predict_img_s": round(rate, 2),
                                 "forward_img_s_before": round(before, 2), "forward_img_s_after": round(after, 2),
                                 "ratio": round(rate / fwd, 3), "bar": 0.8, "pass": rate / fwd >= 0.8}
        print(f"{name:5s}: predict {rate:.1f} img/s ({n} images, {secs:.1f}s); forward alone {before:.1f} / "
              f"{after:.1f} img/s; ratio {rate / fwd:.2f} (bar 0.80)", flush=True)
    sizes = [int(s) for s in args.rss_sizes.split(",") if s.strip()]
    rss = {}
    for n in sizes:
        repeats = max(1, -(-n // args.n_png))
        cmd = [sys.executable, __file__, "--child-package", str(pkg_dir), "--child-folder", str(work / "png"),
               "--child-repeats", str(repeats), "--child-out", str(work / f"rss{n}.csv"), "--threads",
               str(args.threads), "--batch", str(args.batch)] + (["--workers", str(args.workers)] if args.workers else [])
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()
                         .splitlines()[-1])
        rss[res["n"]] = res
        print(f"rss  : {res['n']} images -> peak RSS {res['peak_rss_mib']:.0f} MiB ({res['seconds']:.0f}s)", flush=True)
    if rss:
        lo, hi = min(rss), max(rss)
        growth = rss[hi]["peak_rss_mib"] - rss[lo]["peak_rss_mib"]
        results["rss"] = {"runs": rss, "growth_mib": round(growth, 1), "from": lo, "to": hi, "bar_mib": 100,
                          "pass": growth <= 100}
        print(f"rss  : peak grows {growth:.1f} MiB from {lo} to {hi} images (bar 100 MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
