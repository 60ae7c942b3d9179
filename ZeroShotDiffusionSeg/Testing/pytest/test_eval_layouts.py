"""Each data set layout parsed from a tiny synthetic folder."""

import numpy as np
import pytest
from PIL import Image

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.evaluation.layouts import discover, load_case


def _save(path, array):
    """Write an image; the suffix picks the format (PNG, BMP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _mask(shape, rows, cols, value=255):
    array = np.zeros(shape, np.uint8)
    array[rows[0]:rows[1], cols[0]:cols[1]] = value
    return array


def test_pairs_default_pattern(tmp_path):
    _save(tmp_path / "a.png", np.full((8, 10, 3), 100))
    _save(tmp_path / "a_mask.png", _mask((8, 10), (1, 3), (1, 4), value=1))  # a 0/1 mask: non-zero is lesion
    _save(tmp_path / "sub" / "b.png", np.full((6, 6), 50))
    _save(tmp_path / "sub" / "b_mask.png", _mask((6, 6), (0, 2), (0, 2)))
    _save(tmp_path / "c.png", np.zeros((4, 4)))  # no mask: not a case
    cases = discover("pairs", tmp_path)
    assert [c.name for c in cases] == ["a", "b"]
    loaded = load_case(cases[0])
    assert loaded.image.shape == (8, 10, 3) and loaded.image.max() == pytest.approx(100 / 255)
    assert loaded.truth.sum() == 6 and loaded.spacing is None
    assert load_case(cases[1]).image.shape == (6, 6)


def test_pairs_custom_pattern_in_a_sibling_folder(tmp_path):
    _save(tmp_path / "images" / "x.png", np.zeros((5, 5)))
    _save(tmp_path / "masks" / "x.png", _mask((5, 5), (0, 1), (0, 5)))
    cases = discover("pairs", tmp_path, mask_pattern="../masks/{name}{ext}")
    assert [(c.name, c.image_path.parent.name, c.mask_paths[0].parent.name) for c in cases] == [("x", "images", "masks")]
    assert load_case(cases[0]).truth.sum() == 5


def test_busi_ors_all_masks_and_sorts_naturally(tmp_path):
    root = tmp_path / "malignant"
    for index in (1, 10, 2):
        _save(root / "images" / f"malignant ({index}).png", np.zeros((6, 6, 3)))
        _save(root / "mask" / f"malignant ({index})_mask.png", _mask((6, 6), (0, 1), (0, 1)))
    _save(root / "mask" / "malignant (1)_mask_1.png", _mask((6, 6), (4, 6), (4, 6)))
    cases = discover("busi", tmp_path)
    assert [c.name for c in cases] == ["malignant (1)", "malignant (2)", "malignant (10)"]
    assert len(cases[0].mask_paths) == 2 and len(cases[1].mask_paths) == 1
    assert load_case(cases[0]).truth.sum() == 1 + 4


def test_ph2_flat_and_original_folders(tmp_path):
    _save(tmp_path / "IMD001" / "IMD001.png", np.zeros((4, 5, 3)))
    _save(tmp_path / "IMD001" / "IMD001_lesion.png", _mask((4, 5), (0, 2), (0, 2)))
    _save(tmp_path / "IMD002" / "IMD002_Dermoscopic_Image" / "IMD002.bmp", np.zeros((4, 5, 3)))
    _save(tmp_path / "IMD002" / "IMD002_lesion" / "IMD002_lesion.bmp", _mask((4, 5), (0, 4), (0, 1)))
    cases = discover("ph2", tmp_path)
    assert [c.name for c in cases] == ["IMD001", "IMD002"]
    assert cases[1].image_path.suffix == ".bmp"
    assert [load_case(c).truth.sum() for c in cases] == [4, 4]


def test_wbc_nucleus_and_cell_targets(tmp_path):
    ground_truth = np.zeros((6, 6), np.uint8)
    ground_truth[1:5, 1:5] = 128  # cytoplasm
    ground_truth[2:4, 2:4] = 255  # nucleus
    for folder in ("Dataset 1", "Dataset 2"):
        _save(tmp_path / folder / "001.bmp", np.zeros((6, 6, 3)))
        _save(tmp_path / folder / "001.png", ground_truth)
    nucleus = discover("wbc", tmp_path, wbc_target="nucleus")
    assert [c.name for c in nucleus] == ["Dataset 1/001", "Dataset 2/001"]  # names made unique
    assert load_case(nucleus[0]).truth.sum() == 4
    assert load_case(discover("wbc", tmp_path, wbc_target="cell")[0]).truth.sum() == 16


def test_wbc_without_bmp_images_explains_the_missing_truth(tmp_path):
    _save(tmp_path / "Dataset 1" / "001.png", np.zeros((6, 6, 3)))
    with pytest.raises(UserError, match="bmp"):
        discover("wbc", tmp_path)


def test_nrrd_pairs_read_spacing_in_array_order(tmp_path):
    import SimpleITK as sitk

    volume = np.zeros((3, 4, 5), np.int16)  # (z, y, x)
    label = np.zeros_like(volume, dtype=np.uint8)
    label[1, 1:3, 1:4] = 1
    for name, array in (("case_image.nrrd", volume), ("case_label.nrrd", label)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.5, 0.6, 2.0))  # (x, y, z)
        sitk.WriteImage(image, str(tmp_path / name))
    cases = discover("nrrd-pairs", tmp_path)
    assert [(c.name, c.kind) for c in cases] == [("case", "volume")]
    loaded = load_case(cases[0])
    assert loaded.truth.shape == (3, 4, 5) and loaded.truth.sum() == 6
    assert loaded.spacing == pytest.approx((2.0, 0.6, 0.5))


def test_unknown_layout_and_empty_folder_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        discover("nope", tmp_path)
    with pytest.raises(UserError, match="no pairs cases"):
        discover("pairs", tmp_path)
