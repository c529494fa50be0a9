"""Distinct rows by their bytes."""

import numpy as np

from skfalcon.utils.rows import unique_rows


def test_unique_rows_find_every_distinct_row_and_its_copies():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(7, 5))
    a = distinct[rng.integers(0, 7, size=200)]
    unique, inverse = unique_rows(a)
    assert len(unique) == len(np.unique(a, axis=0)) == 7
    np.testing.assert_array_equal(unique[inverse], a)
    assert inverse.shape == (200,)


def test_unique_rows_of_broadcast_strided_and_tiny_arrays():
    row = np.arange(4.0)
    unique, inverse = unique_rows(np.broadcast_to(row, (50, 4)))
    np.testing.assert_array_equal(unique, row[None])
    np.testing.assert_array_equal(inverse, np.zeros(50))
    columns = np.asfortranarray(np.repeat(np.eye(3), 2, axis=0))
    unique, inverse = unique_rows(columns)
    assert len(unique) == 3
    np.testing.assert_array_equal(unique[inverse], columns)
    one, index = unique_rows(row[None])
    np.testing.assert_array_equal(one, row[None])
    np.testing.assert_array_equal(index, [0])
