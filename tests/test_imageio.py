"""Reader/writer behaviour: exact round trips with geometry, axis order, channels, DICOM, registry, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import skimage.io

from uadnet.imageio import (
    DUMMY_SLICE_SPACING,
    READER_WRITERS,
    BaseReaderWriter,
    ImageReadError,
    NaturalImage2DIO,
    SimpleITKIO,
    reader_writer_class,
    reader_writer_for,
    register_reader_writer,
)

SPACING_XYZ = (0.8, 0.7, 5.0)
ORIGIN = (12.5, -30.25, 7.0)
_c, _s = np.cos(0.3), np.sin(0.3)
DIRECTION = (_c, -_s, 0.0, _s, _c, 0.0, 0.0, 0.0, -1.0)  # rotated in plane, z flipped


def volume(shape_zyx=(4, 5, 6), dtype=np.int16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, shape_zyx).astype(dtype)


def write_sitk(arr: np.ndarray, path: Path, spacing=SPACING_XYZ, origin=ORIGIN, direction=DIRECTION) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return img


def hidden_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- SimpleITK volumes


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_sitk_round_trip_keeps_values_and_geometry(tmp_path, ending):
    arr = volume()
    write_sitk(arr, tmp_path / f"in{ending}")
    io = SimpleITKIO()
    data, props = io.read_images([tmp_path / f"in{ending}"])
    assert data.shape == (1, *arr.shape) and data.dtype == np.float32
    np.testing.assert_array_equal(data[0], arr)
    ref = sitk.ReadImage(str(tmp_path / f"in{ending}"))
    assert props["spacing"] == list(ref.GetSpacing()[::-1])  # (z, y, x)
    assert props["spacing"][0] == pytest.approx(5.0) and props["spacing"][1] == pytest.approx(0.7)
    io.write(data[0], tmp_path / f"out{ending}", props)
    assert not hidden_files(tmp_path)
    data2, props2 = io.read_images([tmp_path / f"out{ending}"])
    np.testing.assert_array_equal(data2, data)
    g, g2 = props["sitk"], props2["sitk"]
    assert g2["size"] == g["size"] == [6, 5, 4]
    assert props2["spacing"] == pytest.approx(props["spacing"], rel=1e-12, abs=0)
    np.testing.assert_allclose(g["direction"], DIRECTION, atol=1e-6)
    # MetaImage stores doubles: bit-exact. NRRD stores spacing * direction (last-digit rounding), NIfTI float32
    # (the direction is re-orthonormalised on reading, so it moves by ~1e-8).
    tol = {".mha": 0.0, ".nrrd": 1e-12}.get(ending, 1e-6)
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(g2[key], g[key], rtol=0, atol=tol, err_msg=key)
    if ending == ".mha":
        assert g2 == g
    assert sitk.ReadImage(str(tmp_path / f"out{ending}")).GetPixelID() == sitk.sitkFloat32


def test_sitk_write_accepts_zyx_and_keeps_integer_dtype(tmp_path):
    arr = volume()
    write_sitk(arr, tmp_path / "in.nrrd")
    io = SimpleITKIO()
    _, props = io.read_images([tmp_path / "in.nrrd"])
    io.write(arr.astype(np.uint8), tmp_path / "seg.nrrd", props)
    assert sitk.ReadImage(str(tmp_path / "seg.nrrd")).GetPixelID() == sitk.sitkUInt8
    io.write((arr > 0), tmp_path / "mask.nrrd", props)  # bool becomes uint8 0/1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nrrd"))), arr > 0)
    io.write(arr.astype(np.float16), tmp_path / "half.nrrd", props)
    np.testing.assert_array_equal(io.read_images([tmp_path / "half.nrrd"])[0][0], arr.astype(np.float16))
    with pytest.raises(ValueError, match="does not match"):
        io.write(arr[:, :, :-1], tmp_path / "bad.nrrd", props)
    with pytest.raises(ValueError, match="one channel"):
        io.write(np.stack([arr, arr]), tmp_path / "bad.nrrd", props)


def test_sitk_upper_case_nifti_name(tmp_path):
    write_sitk(volume(), tmp_path / "in.nii.gz")
    (tmp_path / "in.nii.gz").rename(tmp_path / "CASE.NII.GZ")
    io = SimpleITKIO()
    data, props = io.read_images([tmp_path / "CASE.NII.GZ"])
    io.write(data, tmp_path / "OUT.NII.GZ", props)  # ITK refuses to write this name itself: temp file is .nii.gz
    np.testing.assert_array_equal(io.read_images([tmp_path / "OUT.NII.GZ"])[0], data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CASE.NII.GZ", "OUT.NII.GZ"]


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_sitk_2d_image_is_one_slice_volume(tmp_path, ending):
    arr = volume((7, 9))
    write_sitk(arr, tmp_path / f"in{ending}", spacing=(0.5, 0.25), origin=(3.0, -4.0), direction=(0.0, 1.0, 1.0, 0.0))
    io = SimpleITKIO()
    data, props = io.read_images([tmp_path / f"in{ending}"])
    assert data.shape == (1, 1, 7, 9)
    np.testing.assert_array_equal(data[0, 0], arr)
    assert props["spacing"] == [DUMMY_SLICE_SPACING, 0.25, 0.5]
    io.write(data[0], tmp_path / f"out{ending}", props)
    out = sitk.ReadImage(str(tmp_path / f"out{ending}"))
    assert out.GetDimension() == 2 and out.GetSize() == (9, 7)
    assert out.GetSpacing() == (0.5, 0.25) and out.GetOrigin() == (3.0, -4.0) and out.GetDirection() == (0, 1, 1, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), arr)
    io.write(data, tmp_path / f"out4d{ending}", props)  # (1, 1, y, x) works as well
    assert sitk.ReadImage(str(tmp_path / f"out4d{ending}")).GetDimension() == 2
    with pytest.raises(ValueError, match="2D image"):
        io.write(np.zeros((2, 7, 9)), tmp_path / f"bad{ending}", props)


def test_multichannel_and_geometry_mismatch(tmp_path):
    a, b = volume(seed=1), volume(seed=2)
    write_sitk(a, tmp_path / "c_0000.nii.gz")
    write_sitk(b, tmp_path / "c_0001.nii.gz")
    io = SimpleITKIO()
    data, _ = io.read_images([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])
    assert data.shape == (2, 4, 5, 6)
    np.testing.assert_array_equal(data[0], a)
    np.testing.assert_array_equal(data[1], b)
    bad = {"origin": {"origin": (12.5, -30.25, 9.0)}, "spacing": {"spacing": (0.8, 0.7, 3.0)}, "size": {}}
    for what, kwargs in bad.items():
        p = tmp_path / f"bad_{what}.nii.gz"
        write_sitk(volume((4, 5, 7)) if what == "size" else b, p, **kwargs)
        with pytest.raises(ImageReadError, match=what) as e:
            io.read_images([tmp_path / "c_0000.nii.gz", p])
        assert str(e.value).startswith(str(p))


# ---------------------------------------------------------------- DICOM


def write_dicom_series(arr: np.ndarray, folder: Path, spacing=(0.6, 0.6, 2.5), origin=(-50.0, 20.0, 100.0),
                       series_uid: str = "1.2.826.0.1.3680043.2.1125.1.42", prefix: str = "slice") -> None:
    """One .dcm per slice, with the tags a series reader needs (as in SimpleITK's DicomSeriesFromArray example)."""
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    d = img.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(img.GetDepth()):
        sl = img[:, :, i]
        for tag, value in [
            ("0008|0008", "DERIVED\\SECONDARY"), ("0008|0060", "CT"), ("0008|103e", "uadnet test"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.7"), ("0020|000e", series_uid),
            ("0008|0018", f"{series_uid}.{i + 1}"), ("0020|0013", str(i + 1)),
            ("0020|0037", "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
            ("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, i)))),
            ("0018|0050", str(spacing[2])),
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{i:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_folder_and_single_file(tmp_path):
    arr = volume((5, 8, 6))
    write_dicom_series(arr[::-1], tmp_path / "case")  # slice files in reversed order: the reader sorts by position
    io = SimpleITKIO()
    data, props = io.read_images([tmp_path / "case"])
    assert data.shape == (1, 5, 8, 6)
    assert props["spacing"] == pytest.approx([2.5, 0.6, 0.6])
    np.testing.assert_array_equal(data[0], arr[::-1])
    assert props["sitk"]["origin"] == pytest.approx([-50.0, 20.0, 100.0])
    io.write(data[0], tmp_path / "out.nii.gz", props)
    assert io.read_images([tmp_path / "out.nii.gz"])[1]["spacing"] == pytest.approx([2.5, 0.6, 0.6])

    one, one_props = io.read_images([tmp_path / "case" / "slice002.dcm"])
    assert one.shape == (1, 1, 8, 6)
    np.testing.assert_array_equal(one[0, 0], arr[::-1][2])
    assert one_props["spacing"][1:] == pytest.approx([0.6, 0.6])

    assert io.output_file_ending(".dcm") == ".nii.gz" and io.output_file_ending(".nrrd") == ".nrrd"
    assert reader_writer_class(".dcm") is SimpleITKIO


def test_dicom_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM series"):
        SimpleITKIO().read_images([tmp_path / "empty"])
    write_dicom_series(volume((2, 4, 4)), tmp_path / "mixed", series_uid="1.2.3.4.1")
    write_dicom_series(volume((2, 4, 4)), tmp_path / "mixed", series_uid="1.2.3.4.2", prefix="other")
    with pytest.raises(ImageReadError, match="2 DICOM series"):
        SimpleITKIO().read_images([tmp_path / "mixed"])


# ---------------------------------------------------------------- natural images


def test_natural_grey_rgb_rgba(tmp_path):
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    skimage.io.imsave(tmp_path / "grey.png", grey, check_contrast=False)
    skimage.io.imsave(tmp_path / "rgb.png", rgba[..., :3], check_contrast=False)
    skimage.io.imsave(tmp_path / "rgba.png", rgba, check_contrast=False)
    skimage.io.imsave(tmp_path / "greya.png", np.stack([grey, rgba[..., 3]], -1), check_contrast=False)
    io = NaturalImage2DIO()
    g, props = io.read_images([tmp_path / "grey.png"])
    assert g.shape == (1, 1, 7, 9) and g.dtype == np.float32
    np.testing.assert_array_equal(g[0, 0], grey)
    assert props["spacing"] == [DUMMY_SLICE_SPACING, 1.0, 1.0]
    for name in ("rgb.png", "rgba.png"):
        c, _ = io.read_images([tmp_path / name])
        assert c.shape == (3, 1, 7, 9)
        for k in range(3):  # channel order R, G, B
            np.testing.assert_array_equal(c[k, 0], rgba[..., k])
    ga, _ = io.read_images([tmp_path / "greya.png"])
    assert ga.shape == (1, 1, 7, 9)
    np.testing.assert_array_equal(ga[0, 0], grey)
    both, _ = io.read_images([tmp_path / "grey.png", tmp_path / "rgb.png"])
    assert both.shape == (4, 1, 7, 9)
    skimage.io.imsave(tmp_path / "small.png", grey[:5], check_contrast=False)
    with pytest.raises(ImageReadError, match="small.png"):
        io.read_images([tmp_path / "grey.png", tmp_path / "small.png"])


def test_natural_write(tmp_path):
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    skimage.io.imsave(tmp_path / "grey.png", grey, check_contrast=False)
    io = NaturalImage2DIO()
    data, props = io.read_images([tmp_path / "grey.png"])

    io.write(grey[None, None], tmp_path / "u8.png", props)
    out = skimage.io.imread(tmp_path / "u8.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, grey)
    io.write(data, tmp_path / "again.png", props)  # whole-number float32 as read: stored losslessly as uint8
    np.testing.assert_array_equal(skimage.io.imread(tmp_path / "again.png"), grey)
    io.write(np.moveaxis(rgb, -1, 0)[:, None], tmp_path / "rgb.png", props)
    np.testing.assert_array_equal(io.read_images([tmp_path / "rgb.png"])[0][:, 0], np.moveaxis(rgb, -1, 0))
    u16 = (grey.astype(np.uint16) * 200)[None]
    io.write(u16, tmp_path / "u16.png", props)
    np.testing.assert_array_equal(skimage.io.imread(tmp_path / "u16.png"), u16[0])

    score = rng.random((1, 1, 6, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\.tif"):
        io.write(score, tmp_path / "score.png", props)
    with pytest.raises(ValueError, match=r"\.tif"):
        io.write(u16, tmp_path / "u16.jpg", props)  # JPEG holds 8 bit only
    assert not (tmp_path / "score.png").exists()
    assert io.output_file_ending(".png") == ".tif"
    io.write(score, tmp_path / "score.tif", props)
    back, _ = io.read_images([tmp_path / "score.tif"])
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, score)
    with pytest.raises(ValueError, match="does not match"):
        io.write(score[..., :-1], tmp_path / "bad.tif", props)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        io.write(np.zeros((2, 1, 6, 5), np.uint8), tmp_path / "bad.png", props)
    assert not hidden_files(tmp_path)


# ---------------------------------------------------------------- registry


@pytest.fixture
def restore_registry():
    saved = dict(READER_WRITERS)
    yield
    READER_WRITERS.clear()
    READER_WRITERS.update(saved)


def test_registry_by_ending_and_override(restore_registry):
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".NII.GZ"):
        assert reader_writer_class(ending) is SimpleITKIO
    for ending in (".png", ".PNG", ".tif", ".jpg", ".bmp"):
        assert reader_writer_class(ending) is NaturalImage2DIO
    assert isinstance(reader_writer_for(".png"), NaturalImage2DIO)
    assert reader_writer_class(".png", "NibabelIO") is SimpleITKIO
    assert reader_writer_class(".nii.gz", "NibabelIOWithReorient") is SimpleITKIO
    assert reader_writer_class(".nii.gz", "NaturalImage2DIO") is NaturalImage2DIO
    with pytest.raises(ValueError, match=r"\.nii\.gz.*\.png|\.png.*\.nii\.gz") as e:
        reader_writer_class(".xyz")
    assert ".xyz" in str(e.value)
    with pytest.raises(ValueError, match="SimpleITKIO") as e:
        reader_writer_class(".nii.gz", "Tiff3DIO")
    assert "NaturalImage2DIO" in str(e.value) and "Tiff3DIO" in str(e.value)


def test_register_custom_reader_wins_and_is_removed(restore_registry):
    @register_reader_writer
    class MyPngIO(BaseReaderWriter):
        supported_file_endings = (".png", ".xyz")

        def read_images(self, paths):
            return np.zeros((1, 1, 2, 2), np.float32), {"spacing": [DUMMY_SLICE_SPACING, 1.0, 1.0]}

        def write(self, array, path, properties):
            pass

    assert reader_writer_class(".PNG") is MyPngIO and reader_writer_class(".xyz") is MyPngIO
    assert reader_writer_class(".nii.gz") is SimpleITKIO
    assert reader_writer_class(".png", "MyPngIO") is MyPngIO
    register_reader_writer(NaturalImage2DIO)  # registering again makes it the latest, so it wins again
    assert reader_writer_class(".png") is NaturalImage2DIO


def test_registry_is_clean_again():
    assert set(READER_WRITERS) == {"SimpleITKIO", "NaturalImage2DIO"}
    assert reader_writer_class(".png") is NaturalImage2DIO
    with pytest.raises(ValueError):
        reader_writer_class(".xyz")


# ---------------------------------------------------------------- errors and atomic writing


def test_unreadable_missing_and_4d(tmp_path):
    garbage = tmp_path / "x.nii.gz"
    garbage.write_bytes(np.random.default_rng(5).bytes(300))
    with pytest.raises(ImageReadError, match="x.nii.gz") as e:
        SimpleITKIO().read_images([garbage])
    assert "Unable to determine ImageIO reader" in str(e.value)  # the reason, not just where SimpleITK failed
    for io, name in ((SimpleITKIO(), "nope.nii.gz"), (NaturalImage2DIO(), "nope.png")):
        with pytest.raises(ImageReadError, match=name):
            io.read_images([tmp_path / "sub" / name])
        with pytest.raises(ImageReadError):
            io.read_images([])
    (tmp_path / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="x.png"):
        NaturalImage2DIO().read_images([tmp_path / "x.png"])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False),
                    str(tmp_path / "four.nii.gz"))
    with pytest.raises(ImageReadError, match="4D"):
        SimpleITKIO().read_images([tmp_path / "four.nii.gz"])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), np.float32), isVector=True),
                    str(tmp_path / "vec.mha"))
    with pytest.raises(ImageReadError, match="vector"):
        SimpleITKIO().read_images([tmp_path / "vec.mha"])


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path, monkeypatch):
    arr = volume()
    write_sitk(arr, tmp_path / "case.nii.gz")
    io = SimpleITKIO()
    data, props = io.read_images([tmp_path / "case.nii.gz"])
    io.write(data[0] * 2, tmp_path / "sub" / "case.nii.gz", props)  # creates the folder
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["case.nii.gz"]

    def broken(img, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        io.write(data[0], tmp_path / "sub" / "case.nii.gz", props)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["case.nii.gz"]
    np.testing.assert_array_equal(io.read_images([tmp_path / "sub" / "case.nii.gz"])[0][0], arr * 2)


def test_broken_dicom_series_is_an_image_read_error(tmp_path):
    write_dicom_series(volume((3, 4, 4)), tmp_path / "case")
    write_dicom_series(volume((1, 5, 5)), tmp_path / "odd", origin=(-50.0, 20.0, 120.0))
    (tmp_path / "odd" / "slice000.dcm").rename(tmp_path / "case" / "odd.dcm")  # same series, another size
    with pytest.raises(ImageReadError, match="case"):
        SimpleITKIO().read_images([tmp_path / "case"])
