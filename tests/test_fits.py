"""Layer-profile fits vs exact sequences and numpy's polyfit/corrcoef; validation; vmap."""

import jax
import numpy as np
import pytest

from pnc_jax.fits import geometric_fit, linear_fit


def _rel(a, b, tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=0)


def test_fits_exact_and_noisy():
    l = np.arange(8)
    geo = 3.0 * 0.4**l
    geo[0] = 100.0  # layer 0 is excluded by start=1
    f = geometric_fit(geo)
    _rel(f["ratio"], 0.4, 1e-12)
    _rel(f["intercept"], np.log(3.0), 1e-12)
    _rel(f["r2"], 1.0, 1e-12)
    _rel(f["pearson_r"], -1.0, 1e-12)
    assert float(geometric_fit(geo, start=0)["r2"]) < 0.99  # layer 0 now counts

    lin = 0.5 + 0.07 * l
    g = linear_fit(lin, start=2)
    _rel(g["slope"], 0.07, 1e-12)
    _rel(g["intercept"], 0.5, 1e-12)
    _rel(g["r2"], 1.0, 1e-12)

    rng = np.random.default_rng(10)
    noisy = np.exp(-0.8 * l + 0.3 * rng.standard_normal(8))
    fit = geometric_fit(noisy)
    slope, icpt = np.polyfit(l[1:], np.log(noisy[1:]), 1)
    r = np.corrcoef(l[1:], np.log(noisy[1:]))[0, 1]
    _rel(fit["slope"], slope, 1e-10)
    _rel(fit["ratio"], np.exp(slope), 1e-10)
    _rel(fit["intercept"], icpt, 1e-10)
    _rel(fit["pearson_r"], r, 1e-10)
    _rel(fit["r2"], r**2, 1e-10)
    assert 0.5 < float(fit["r2"]) < 1.0


def test_fits_vmap_and_jit():
    rates = np.array([1.0, 2.0, 3.0])
    profiles = np.exp(-0.5 * np.arange(6)[None, :] * rates[:, None])
    fits = jax.jit(jax.vmap(geometric_fit))(profiles)
    _rel(fits["ratio"], np.exp(-0.5 * rates), 1e-12)
    lin = jax.vmap(lambda v: linear_fit(v, start=0))(profiles)
    for i in range(3):
        _rel(lin["slope"][i], linear_fit(profiles[i], start=0)["slope"], 1e-12)
        _rel(lin["r2"][i], linear_fit(profiles[i], start=0)["r2"], 1e-12)


def test_fits_bad_input():
    with pytest.raises(ValueError, match=r"values must be 1-D.*\(2, 3\)"):
        geometric_fit(np.ones((2, 3)))
    with pytest.raises(ValueError, match="start=2 with L=3"):
        linear_fit(np.ones(3), start=2)
    with pytest.raises(ValueError, match="start=-1"):
        linear_fit(np.ones(5), start=-1)
    with pytest.raises(ValueError, match="1.5"):
        linear_fit(np.ones(5), start=1.5)


def test_fit_record_reports_the_fit_and_refuses_what_cannot_be_fitted():
    from pnc_jax.fits import fit_record

    c = 12.0 * 0.3 ** np.arange(6)
    rec = fit_record(c, "geometric", start=2)
    assert rec["start"] == 2 and abs(rec["ratio"] - 0.3) < 1e-12 and rec["r2"] > 1 - 1e-12
    line = fit_record(0.5 + 0.1 * np.arange(5), "linear")
    assert abs(line["slope"] - 0.1) < 1e-12 and set(line) == {"slope", "r2", "pearson_r", "start"}
    assert fit_record([1.0, 0.5], "geometric") is None  # one point after start
    assert fit_record([1.0, 0.5, np.nan, 0.1], "geometric") is None
    assert fit_record([1.0, 0.5, -0.1, 0.1], "geometric") is None  # log of a negative value
    assert fit_record([1.0, 0.5, -0.1, 0.1], "linear") is not None


def test_json_float_maps_non_finite_to_none():
    from pnc_jax.workdir import json_float

    assert json_float(None) is None and json_float(np.float32(2.5)) == 2.5
    assert json_float([1.0, np.inf, np.nan]) == [1.0, None, None]
