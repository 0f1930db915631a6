"""OSTN15 both ways, computed by redline from the grid read once out of convertbng: the same answers as
convertbng to the millimetre, and safe in a process forked after convertbng's threads were started."""

from __future__ import annotations

import os
import select
import signal
import time

import numpy as np
from convertbng.cutil import convert_bng, convert_lonlat
from pyproj.enums import TransformDirection

from constraints.site import parse_site
from datasets import crs

ENGLAND_LON, ENGLAND_LAT = (-6.5, 1.78), (49.8, 55.9)


def test_lonlat_to_grid_agrees_with_convertbng_to_the_millimetre_and_on_where_the_cover_ends():
    rng = np.random.default_rng(3)
    # the whole of OSTN15's box and the sea around it, so the coast and the edge of cover are crossed
    lon, lat = rng.uniform(-9.0, 2.5, 200_000), rng.uniform(49.5, 61.2, 200_000)
    ours, theirs = crs.lonlat_to_bng(lon, lat), convert_bng(lon, lat)
    # convertbng extrapolates from its first column of cells to ETRS89 eastings just below zero, off
    # the grid (the Atlantic west of 7.5° W); everywhere else both agree on what is covered
    etrs89_east, _ = crs._ETRS89_TM.transform(lon, lat)
    judged = etrs89_east >= 0
    assert np.array_equal(np.isfinite(ours[0])[judged], np.isfinite(theirs[0])[judged])
    assert np.isfinite(ours[0]).sum() > 150_000 and (~np.isfinite(ours[0])).sum() > 10_000
    in_england = (lon > ENGLAND_LON[0]) & (lat < ENGLAND_LAT[1]) & np.isfinite(theirs[0])
    assert np.abs(ours[0] - theirs[0])[in_england].max() < 0.001
    assert np.abs(ours[1] - theirs[1])[in_england].max() < 0.001


def test_grid_to_lonlat_agrees_with_convertbng_and_round_trips():
    rng = np.random.default_rng(4)
    lon, lat = rng.uniform(*ENGLAND_LON, 100_000), rng.uniform(*ENGLAND_LAT, 100_000)
    east, north = convert_bng(lon, lat)
    covered = np.isfinite(east)
    east, north, lon, lat = east[covered], north[covered], lon[covered], lat[covered]
    ours, theirs = crs.bng_to_lonlat(east, north), convert_lonlat(east, north)
    # 2e-8 degrees is about 2 mm; convertbng rounds its answer to 1e-8
    assert np.abs(ours[0] - theirs[0]).max() < 2e-8 and np.abs(ours[1] - theirs[1]).max() < 2e-8
    assert np.abs(ours[0] - lon).max() < 2e-8 and np.abs(ours[1] - lat).max() < 2e-8  # back where they started
    assert np.isnan(crs.bng_to_lonlat([-5_000.0], [100_000.0])[0]).all()  # off the grid stays off the grid


def _answer_in_a_forked_child(work, timeout: float = 10.0) -> bytes | None:
    """What ``work()`` returns (bytes) in a child forked now; None if the child has not answered in time."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.write(write_end, work())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        return os.read(read_end, 1 << 16) if ready else None
    finally:
        os.close(read_end)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_process_forked_after_convertbng_ran_reprojects_and_repairs_without_it():
    # convertbng's worker threads are started in this process, as in a worker that loaded its layers
    convert_bng([-2.36], [51.38])
    crs.ostn15_grid()
    repeated_vertex = {"type": "Polygon", "coordinates": [[[-2.3614, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.3812]]]}
    coast = {"type": "Polygon", "coordinates": [[[-5.7160, 50.0660], [-5.7150, 50.0660], [-5.7150, 50.0666], [-5.7160, 50.0666], [-5.7160, 50.0660]]]}  # Land's End

    def work() -> bytes:
        site = parse_site(repeated_vertex)
        lon, lat = crs.bng_to_lonlat([530999.0], [176744.0])
        edge = parse_site(coast)
        return f"{site.warnings[0]}|{lon[0]:.5f}|{edge.grid_reference}".encode()

    started = time.monotonic()
    answer = _answer_in_a_forked_child(work)
    assert answer is not None, "the forked child hung reprojecting a site"
    assert time.monotonic() - started < 5
    warning, lon, grid_reference = answer.decode().split("|")
    assert warning == "repeated points were removed" and lon == "-0.11515" and grid_reference.startswith("SW 34")


def _bilinear_shift(east: np.ndarray, north: np.ndarray) -> np.ndarray:
    """OSTN15's shift by the numpy formula layers were indexed with before the lookup was compiled."""
    grid, covered = crs.ostn15_grid(), crs._loaded().covered
    fe, fn = east / 1000.0, north / 1000.0
    inside = (fe >= 0) & (fn >= 0) & (fe < covered.shape[1]) & (fn < covered.shape[0])  # NaN fails
    column, row = np.where(inside, fe, 0.0).astype(np.intp), np.where(inside, fn, 0.0).astype(np.intp)
    inside &= covered[row, column]
    fx, fy = (fe - column)[:, None], (fn - row)[:, None]
    shift = (
        grid[row, column] * ((1 - fx) * (1 - fy))
        + grid[row, column + 1] * (fx * (1 - fy))
        + grid[row + 1, column] * ((1 - fx) * fy)
        + grid[row + 1, column + 1] * (fx * fy)
    )
    shift[~inside] = np.nan
    return shift


def test_the_compiled_lookup_gives_the_bilinear_formula_to_the_bit_both_ways():
    # a derived piece cached before the lookup was compiled must still share its edges with a site
    # to the bit: numba must neither reorder nor fuse (FMA) the arithmetic on the CPU it compiles for
    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(-9.0, 2.5, 300_000), rng.uniform(49.5, 61.2, 300_000)
    lon[:50], lat[50:100] = np.nan, np.inf
    east, north = crs._ETRS89_TM.transform(lon, lat)
    with np.errstate(invalid="ignore"):
        shift = _bilinear_shift(east, north)
    accepted = (lon >= crs.OSTN15_LON[0]) & (lon <= crs.OSTN15_LON[1]) & (lat >= crs.OSTN15_LAT[0]) & (lat <= crs.OSTN15_LAT[1])
    shift[~accepted] = np.nan
    ours = crs.lonlat_to_bng(lon, lat)
    assert np.array_equal(ours[0], east + shift[:, 0], equal_nan=True)
    assert np.array_equal(ours[1], north + shift[:, 1], equal_nan=True)
    assert np.isfinite(ours[0]).sum() > 150_000

    easting, northing = rng.uniform(-5_000.0, 705_000.0, 100_000), rng.uniform(-5_000.0, 1_255_000.0, 100_000)
    east, north = easting, northing
    with np.errstate(invalid="ignore"):
        for _ in range(8):  # every point moves until none moves by a micrometre, as the numpy loop did
            shift = _bilinear_shift(east, north)
            moved = np.nanmax(np.abs(np.r_[easting - shift[:, 0] - east, northing - shift[:, 1] - north]), initial=0.0)
            east, north = easting - shift[:, 0], northing - shift[:, 1]
            if moved < 1e-6:
                break
    lon, lat = crs._ETRS89_TM.transform(east, north, direction="INVERSE")
    lon[~np.isfinite(east)], lat[~np.isfinite(east)] = np.nan, np.nan
    ours = crs.bng_to_lonlat(easting, northing)
    assert np.array_equal(ours[0], lon, equal_nan=True) and np.array_equal(ours[1], lat, equal_nan=True)


def test_the_grid_accepts_nothing_outside_great_britains_box():
    # the simple-polygon path in constraints.site hands a site back to the general one (which names the
    # point outside Great Britain) when any point comes out off the grid, with no box check of its own
    assert crs.GB_LON[0] <= crs.OSTN15_LON[0] and crs.OSTN15_LON[1] <= crs.GB_LON[1]
    assert crs.GB_LAT[0] <= crs.OSTN15_LAT[0] and crs.OSTN15_LAT[1] <= crs.GB_LAT[1]
    _, off = crs.lonlat_points_to_bng(np.array([[-1.5, 52.5], [crs.GB_LON[1] + 0.01, 52.5], [np.nan, 52.5]]))
    assert off == 2


def test_the_direct_proj_call_and_the_public_transform_it_falls_back_to_give_the_same_doubles(monkeypatch):
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(-8.5, 1.7, 5000), rng.uniform(49.95, 60.8, 5000)
    direct = np.array([lon, lat])
    crs._project_in_place(direct[0], direct[1], TransformDirection.FORWARD)

    real = crs._ETRS89_TM

    class Moved:  # a pyproj whose private transform is gone
        def __getattr__(self, name):
            if name == "_transformer":
                raise AttributeError(name)
            return getattr(real, name)

    monkeypatch.setattr(crs, "_ETRS89_TM", Moved())
    public = np.array([lon, lat])
    crs._project_in_place(public[0], public[1], TransformDirection.FORWARD)
    assert np.array_equal(direct, public)
    assert not np.array_equal(direct[0], lon)  # it did project
