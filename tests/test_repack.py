"""`_packing.repack` rewrites a pack in place bitwise as `pack` builds a fresh one, for every
padding case (hidden and input sizes on and off the panel, bias or not, projections)."""
import numpy as np
import pytest

from fastlstm._packing import pack, repack

FIELDS = ("w_ih", "w_hh", "bias", "w_ih_t", "w_hh_t", "w_hr", "w_hr_t")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("I,H,P,bias", [(3, 5, 0, True), (16, 16, 0, True), (17, 32, 0, False),
                                        (8, 9, 4, True), (33, 40, 16, True), (32, 32, 8, False),
                                        (64, 70, 0, True), (130, 128, 0, False)])
def test_repack_equals_a_fresh_pack(isa, dtype, I, H, P, bias):
    """Under every kernel variant (its repack tile is a copy, so all write the same bytes)."""
    rng = np.random.default_rng(I * 100 + H)

    def draw():
        def n(*shape):
            return rng.standard_normal(shape).astype(dtype)
        return (n(4 * H, I), n(4 * H, P or H), n(4 * H) if bias else None,
                n(4 * H) if bias else None, n(P, H) if P else None)

    first = draw()
    p = pack(*first[:4], dtype, first[4])
    arrays = {f: getattr(p, f) for f in FIELDS}
    for _ in range(2):  # the second repack also finds its staging buffers made
        new = draw()
        before = [a.copy() for a in new if a is not None]
        repack(p, *new)
        fresh = pack(*new[:4], dtype, new[4])
        for f in FIELDS:
            got, want = getattr(p, f), getattr(fresh, f)
            assert got is arrays[f]  # in place: the kernels' pointers stay valid
            assert (got is None) == (want is None)
            if got is not None:
                np.testing.assert_array_equal(got, want, err_msg=f)
        assert all(np.array_equal(a, b) for a, b in zip([a for a in new if a is not None], before))
