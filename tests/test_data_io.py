"""Radiograph IO: DICOM grayscale pipeline, 16-bit PNG, 8-bit JPEG/PNG, broken files, resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radpair.data.io import (
    Fit,
    NormalisationSpec,
    RadiographError,
    ResizeSpec,
    decode_radiograph,
    prepare_radiograph,
    read_radiograph,
    resize_to_square,
)
from radpair.errors import ConfigError

# ----------------------------------------------------------------- fixture writers (also used by test_cache)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    lut: np.ndarray | None = None,
    rescale: tuple[float, float] | None = None,
    high_bit_garbage: bool = False,
    view: str | None = None,
) -> Path:
    """A DX DICOM written with pydicom: 16 bits allocated, ``bits_stored`` used."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if view:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = photometric
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(lut), 0, 16])  # LUT Descriptor: declares 16 bits
        item.add_new(0x00283006, "US", [int(v) for v in lut])  # LUT Data (12-bit values)
        ds.VOILUTSequence = Sequence([item])
    pixels = stored.astype(np.uint16)
    if high_bit_garbage:  # overlay-style bits above BitsStored must be ignored
        pixels = pixels | np.uint16(0xF000)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def phantom(h: int = 48, w: int = 40, max_value: int = 4095) -> np.ndarray:
    """Bright 'body' (high attenuation) in the middle, dark air at the edges, a gradient."""
    y, x = np.mgrid[0:h, 0:w]
    body = ((y - h / 2) ** 2 / (h / 2.5) ** 2 + (x - w / 2) ** 2 / (w / 3) ** 2) < 1
    img = 0.1 + 0.3 * x / w + 0.5 * body
    return np.round(img / img.max() * max_value).astype(np.uint16)


def write_jpeg(path: Path, h: int = 120, w: int = 100, seed: int = 0, rgb: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    base = (phantom(h, w, 255).astype(np.float32) + rng.normal(0, 5, (h, w))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    if rgb:
        img = img.convert("RGB")
    img.save(path, quality=92)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    write_jpeg(path, 200, 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ----------------------------------------------------------------- DICOM


def test_monochrome1_has_the_same_polarity_as_monochrome2(tmp_path):
    body = phantom()
    m2 = read_radiograph(write_dicom(tmp_path / "m2.dcm", body, "MONOCHROME2"))
    m1 = read_radiograph(write_dicom(tmp_path / "m1.dcm", 4095 - body, "MONOCHROME1"))
    assert m1.dtype == np.uint8 and m1.shape == body.shape
    assert np.abs(m1.astype(int) - m2.astype(int)).max() <= 1
    centre, corner = m1[24, 20], m1[2, 2]
    assert centre > corner + 100  # the body is bright, air is dark, in both


def test_monochrome1_polarity_with_a_window(tmp_path):
    body = phantom()
    m2 = read_radiograph(write_dicom(tmp_path / "m2.dcm", body, "MONOCHROME2", window=(2000, 3000)))
    m1 = read_radiograph(write_dicom(tmp_path / "m1.dcm", 4095 - body, "MONOCHROME1", window=(4096 - 2000, 3000)))
    assert np.abs(m1.astype(int) - m2.astype(int)).max() <= 1
    kept = read_radiograph(tmp_path / "m1.dcm", NormalisationSpec(invert_monochrome1=False))
    assert kept[24, 20] < kept[2, 2]  # opting out keeps the stored (inverted) polarity


def test_12_bit_data_is_not_scaled_as_16_bit(tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (8, 1))
    path = write_dicom(tmp_path / "ramp.dcm", ramp, bits_stored=12, high_bit_garbage=True)
    for fallback in ("bits_stored", "minmax"):
        img = read_radiograph(path, NormalisationSpec(fallback=fallback))
        assert img[0, 0] == 0 and img[0, -1] == 255, fallback  # 4095 is white, not 4095/65535
        assert np.all(np.diff(img[0].astype(int)) >= 0)  # garbage high bits were masked off


def test_window_center_width_linear(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))
    img = read_radiograph(write_dicom(tmp_path / "w.dcm", ramp, window=(2048, 1024)))
    values = dict(zip(ramp[0].tolist(), img[0].tolist()))
    assert values[1024] == 0 and values[1472] == 0  # below the window
    assert values[3072] == 255  # above it
    assert abs(values[2048] - 128) <= 1  # the centre maps to mid grey


def test_rescale_slope_intercept_applies_before_the_window(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))
    plain = read_radiograph(write_dicom(tmp_path / "a.dcm", ramp, window=(2048, 1024)))
    # modality values = 2 * stored - 1000; the same window expressed in modality units
    scaled = read_radiograph(write_dicom(tmp_path / "b.dcm", ramp, window=(2 * 2048 - 1000, 2048), rescale=(2.0, -1000.0)))
    assert np.abs(plain.astype(int) - scaled.astype(int)).max() <= 1


def test_voi_lut_sequence_is_applied_and_preferred(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 32, dtype=np.uint16), (4, 1))
    lut = np.round(np.sqrt(np.arange(4096) / 4095.0) * 4095).astype(np.uint16)  # 12-bit values, 16-bit descriptor
    path = write_dicom(tmp_path / "lut.dcm", ramp, window=(100, 10), lut=lut)
    img = read_radiograph(path)  # auto: the LUT wins over the (deliberately silly) window
    expected = np.round(lut[ramp[0]] / 4095.0 * 255).astype(int)
    assert np.abs(img[0].astype(int) - expected).max() <= 1
    windowed = read_radiograph(path, NormalisationSpec(voi="window"))
    assert windowed[0, 10] == 255  # stored 320 > 100 + 5: the window maps it to white
    raw = read_radiograph(path, NormalisationSpec(voi="none", fallback="bits_stored"))
    assert abs(int(raw[0, 64]) - round(2048 / 4095 * 255)) <= 1


def test_uint16_output(tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 16).round().astype(np.uint16), (4, 1))
    img = read_radiograph(write_dicom(tmp_path / "r.dcm", ramp), NormalisationSpec(dtype="uint16", fallback="bits_stored"))
    assert img.dtype == np.uint16 and img[0, 0] == 0 and img[0, -1] == 65535


def test_rle_compressed_dicom(tmp_path):
    import pydicom
    from pydicom.uid import RLELossless

    body = phantom()
    src = write_dicom(tmp_path / "plain.dcm", body)
    ds = pydicom.dcmread(src)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert np.array_equal(read_radiograph(tmp_path / "rle.dcm"), read_radiograph(src))


def test_jpeg2000_dicom_when_openjpeg_is_installed(tmp_path):
    pytest.importorskip("openjpeg")
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    src = write_dicom(tmp_path / "plain.dcm", phantom())
    ds = pydicom.dcmread(src)
    ds.compress(JPEG2000Lossless)
    ds.save_as(tmp_path / "j2k.dcm")
    assert np.array_equal(read_radiograph(tmp_path / "j2k.dcm"), read_radiograph(src))


def test_dicom_without_pixels_and_undecodable_syntax(tmp_path):
    import pydicom

    src = write_dicom(tmp_path / "a.dcm", phantom())
    ds = pydicom.dcmread(src)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(RadiographError, match="no pixel data"):
        read_radiograph(tmp_path / "nopix.dcm")
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.99.1"  # a private, unknown syntax
    ds.save_as(tmp_path / "odd.dcm")
    with pytest.raises(RadiographError, match="odd.dcm"):
        read_radiograph(tmp_path / "odd.dcm")


# ----------------------------------------------------------------- PNG / JPEG


def test_16_bit_png(tmp_path):
    values = np.tile(np.linspace(0, 4000, 50).round().astype(np.uint16), (10, 1))  # 12-bit data in a 16-bit PNG
    Image.fromarray(values).save(tmp_path / "x16.png")
    img = read_radiograph(tmp_path / "x16.png")
    assert img[0, 0] == 0 and img[0, -1] == 255  # minmax: full contrast
    dark = read_radiograph(tmp_path / "x16.png", NormalisationSpec(fallback="bits_stored"))
    assert dark.max() == round(4000 / 65535 * 255)  # the nominal 16-bit range, if asked for
    dec = decode_radiograph(tmp_path / "x16.png")
    assert dec.source_bits == 16 and dec.pixels.dtype == np.float32


def test_8_bit_jpeg_and_png_are_kept_as_stored(tmp_path):
    jpg = write_jpeg(tmp_path / "a.jpg")
    expected = np.asarray(Image.open(jpg).convert("L"))
    assert np.array_equal(read_radiograph(jpg), expected)
    rgb = write_jpeg(tmp_path / "rgb.jpg", rgb=True)
    assert read_radiograph(rgb).ndim == 2
    arr = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert np.array_equal(read_radiograph(tmp_path / "a.png"), arr)
    assert np.array_equal(read_radiograph(tmp_path / "a.png", NormalisationSpec(dtype="uint16")), arr.astype(np.uint16) * 257)


def test_format_is_sniffed_not_taken_from_the_name(tmp_path):
    jpg = write_jpeg(tmp_path / "a.jpg")
    fake = tmp_path / "really_a_jpeg.png"
    fake.write_bytes(jpg.read_bytes())
    assert np.array_equal(read_radiograph(fake), read_radiograph(jpg))
    no_ext = tmp_path / "dicom_export"
    no_ext.write_bytes(write_dicom(tmp_path / "d.dcm", phantom()).read_bytes())
    assert read_radiograph(no_ext).shape == (48, 40)


@pytest.mark.parametrize(
    "maker, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: write_truncated_jpeg(p), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "corrupt|truncated|cannot open|not a recognised"),
        (lambda p: p.write_bytes(b"hello, not an image at all" * 10), "not a recognised"),
        (lambda p: None, "file not found"),
    ],
    ids=["zero-byte", "truncated-jpeg", "broken-png", "text", "missing"],
)
def test_broken_files_raise_with_the_file_and_reason(tmp_path, maker, reason):
    path = tmp_path / "bad.jpg"
    maker(path)
    with pytest.raises(RadiographError, match=reason) as info:
        prepare_radiograph(path, ResizeSpec(32))
    assert "bad.jpg" in str(info.value)


# ----------------------------------------------------------------- geometry


def test_pad_and_crop_keep_the_aspect_ratio():
    img = np.full((100, 50), 200, dtype=np.uint8)
    padded = resize_to_square(img, ResizeSpec(32, fit="pad"))
    assert padded.shape == (32, 32)
    cols = np.flatnonzero(padded[16] > 0)
    assert cols.min() == 8 and cols.max() == 23  # 16 wide content, centred
    cropped = resize_to_square(img, ResizeSpec(32, fit=Fit.CROP))
    assert cropped.shape == (32, 32) and cropped.min() == 200
    unit = resize_to_square(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48), ResizeSpec(16))
    assert unit.dtype == np.float32 and unit.shape == (16, 16)


def test_jpeg_draft_decoding_is_close_to_full_decoding(tmp_path):
    path = write_jpeg(tmp_path / "big.jpg", 1024, 900)
    fast = prepare_radiograph(path, ResizeSpec(128, draft=True)).astype(int)
    full = prepare_radiograph(path, ResizeSpec(128, draft=False)).astype(int)
    assert fast.shape == full.shape == (128, 128)
    # DCT-domain 1/8 scaling differs from box averaging only at sharp edges
    assert abs(fast.mean() - full.mean()) < 1.0
    assert np.corrcoef(fast.ravel(), full.ravel())[0, 1] > 0.99


def test_spec_round_trip_and_typos():
    spec = NormalisationSpec(dtype="uint16", fallback="percentile", percentiles=(1, 99))
    assert NormalisationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="did you mean 'minmax'"):
        NormalisationSpec(fallback="minmx")
    with pytest.raises(ConfigError, match="did you mean 'crop'"):
        ResizeSpec(64, fit="crap")
