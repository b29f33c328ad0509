"""The data behind the applications chapter: Old Faithful's waiting times against R's own
summaries of `faithful`, and the offline loaders (`faithful`, `sample_image`)."""

import numpy as np
import pytest

from gmmcourse.data import (
    FAITHFUL_ERUPTIONS,
    FAITHFUL_WAITING,
    SAMPLE_IMAGES,
    faithful,
    sample_image,
)


def test_faithful_matches_r_summary():
    """R: nrow(faithful) 272; colMeans 3.487783 70.897059; summary(faithful$waiting)
    43.0 58.0 76.0 70.9 82.0 96.0; sd(faithful$waiting) 13.59497;
    cor(faithful)[1, 2] 0.9008112."""
    x = faithful()
    assert x.shape == (272, 2) and x.dtype == np.float64
    assert round(float(x[:, 0].mean()), 6) == 3.487783
    assert round(float(x[:, 1].mean()), 5) == 70.89706
    w = FAITHFUL_WAITING
    assert w.shape == (272,)
    assert w[:6].tolist() == [79, 54, 74, 62, 85, 55] and w[-3:].tolist() == [90, 46, 74]
    assert np.all(w == np.round(w)), "waiting times were recorded in whole minutes"
    np.testing.assert_array_equal(np.quantile(w, [0, 0.25, 0.5, 0.75, 1]), [43, 58, 76, 82, 96])
    assert round(float(np.std(w, ddof=1)), 5) == 13.59497
    assert round(float(np.corrcoef(x[:, 0], x[:, 1])[0, 1]), 7) == 0.9008112


def test_faithful_columns_are_the_module_constants_and_read_only():
    x = faithful()
    np.testing.assert_array_equal(x[:, 0], FAITHFUL_ERUPTIONS)
    np.testing.assert_array_equal(x[:, 1], FAITHFUL_WAITING)
    for a in (x, FAITHFUL_WAITING):
        with pytest.raises(ValueError):
            a[0] = 0.0


@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_sample_image_loads_offline_in_unit_range(name, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("sample_image tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    img = sample_image(name)
    assert img.shape == (427, 640, 3) and img.dtype == np.float64
    assert img.min() >= 0.0 and img.max() <= 1.0
    # the 8-bit values divided by 255, nothing else
    np.testing.assert_allclose(img * 255, np.round(img * 255), atol=1e-9)
    assert not img.flags.writeable


def test_sample_image_refuses_an_unknown_name_in_one_line():
    with pytest.raises(ValueError, match=r"^name must be one of china.jpg, flower.jpg, got 'x.png'$"):
        sample_image("x.png")
