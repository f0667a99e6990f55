"""checks: tensor statistics, verify reports, and diff across formats."""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

import ckptkit
from ckptkit.checks import diff, stats, tensor_stats, verify

VALUES = {
    "net/conv/weights": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "net/conv/biases": np.array([0.5, -1.25, 3.0], np.float32),
    "net/logits/weights": np.linspace(-1, 1, 20, dtype=np.float64).reshape(4, 5),
    "global_step": np.array(1000, np.int64),
    "counts": np.array([2 ** 62 + 1, -3], np.int64),
}


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, **VALUES)
    return path


def _safetensors(tmp_path, values, name="b.safetensors"):
    path = tmp_path / name
    save_file({k: v.copy(order="C") for k, v in values.items()}, str(path))
    return path


def _diff(a, b, **kw):
    with ckptkit.open_checkpoint(a) as ra, ckptkit.open_checkpoint(b) as rb:
        return diff(ra, rb, **kw)


def test_stats_stream_finite_values_and_count_nan_inf():
    st = tensor_stats(np.array([1, np.nan, np.inf, -np.inf, 3, -2], np.float32))
    assert (st.min, st.max, st.nan, st.inf) == (-2.0, 3.0, 1, 2)
    assert st.mean == pytest.approx(2 / 3) and st.std == pytest.approx(np.std([1, 3, -2]))


def test_stats_over_chunks_equal_numpy():
    x = np.random.default_rng(0).standard_normal(3_000_001).astype(np.float32)
    st = tensor_stats(x)
    assert (st.min, st.max) == (float(x.min()), float(x.max()))
    assert st.mean == pytest.approx(float(x.astype(np.float64).mean()), abs=1e-12)
    assert st.std == pytest.approx(float(x.astype(np.float64).std()), rel=1e-9)


@pytest.mark.parametrize("values, mean, std", [
    (np.array([1.79e308, 1.79e308, -1.79e308]), 1.79e308 / 3, 1.79e308 * np.std([1, 1, -1])),
    (np.full(5, np.finfo(np.float64).max), np.finfo(np.float64).max, 0.0),
    (np.array([-np.finfo(np.float32).max, np.finfo(np.float32).max], np.float32), 0.0,
     float(np.finfo(np.float32).max)),
])
def test_stats_near_the_largest_float_are_right_and_silent(values, mean, std):
    """Summing or squaring such values overflows; the scaled passes do not, and no numpy
    warning escapes (a warning here is an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = tensor_stats(values)
    assert st.mean == pytest.approx(mean, rel=1e-12, abs=1e-300)
    assert st.std == pytest.approx(std, rel=1e-12, abs=1e-300)


def test_a_signalling_nan_counts_as_nan_without_a_warning():
    signalling = np.array([0x7FA00000, 0x3F800000, 0x40000000], np.uint32).view(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = tensor_stats(signalling)
    assert (st.min, st.max, st.mean, st.std, st.nan, st.inf) == (1.0, 2.0, 1.5, 0.5, 1, 0)


def test_stats_none_for_strings_and_nan_when_nothing_is_finite():
    assert tensor_stats(np.array([b"a"], dtype=object)) is None
    st = tensor_stats(np.array([np.nan, np.inf]))
    assert np.isnan(st.min) and (st.nan, st.inf) == (1, 1)


def test_stats_of_many_small_tensors_batched_equal_each_tensor_alone():
    """checks.stats summarises small tensors together; every result, in order, is the one
    tensor_stats gives that tensor alone, and no numpy warning escapes."""
    import ml_dtypes

    rng = np.random.default_rng(3)
    arrays = {
        "big": rng.standard_normal(5000).astype(np.float32),
        "near_max": np.array([1.79e308, 1.79e308, -1.79e308]),
        "signalling": np.array([0x7FA00000, 0x3F800000], np.uint32).view(np.float32),
        "none_finite": np.array([np.nan, np.inf, -np.inf], np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "ints": np.array([2 ** 62 + 1, -3], np.int64),
        "bools": np.array([True, False, True]),
        "bf16": rng.standard_normal(7).astype(ml_dtypes.bfloat16),
        "strings": np.array([b"a"], dtype=object),
        "complex": np.array([3 + 4j, 1j], np.complex64),
        "zeros": np.zeros(4, np.float16),
        **{f"small_{i}": rng.standard_normal(i + 1) * 10.0 ** (i % 7) for i in range(300)},
    }

    class Arrays:
        def read(self, name):
            return arrays[name]
    variables = [SimpleNamespace(name=name, nbytes=a.nbytes) for name, a in arrays.items()]
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairs = list(stats(Arrays(), variables, progress=seen.append))
    assert [v.name for v, _ in pairs] == list(arrays)
    assert seen == [a.nbytes for a in arrays.values()]
    for var, got in pairs:
        alone = tensor_stats(arrays[var.name])
        if alone is None:
            assert got is None, var.name
            continue
        for field_name, value in vars(alone).items():
            np.testing.assert_allclose(getattr(got, field_name), value, rtol=1e-12,
                                       atol=1e-300, err_msg=f"{var.name}.{field_name}")


def test_diff_npz_and_safetensors_of_the_same_values_are_equal(npz, tmp_path):
    report = _diff(npz, _safetensors(tmp_path, VALUES))
    assert report.same and report.equal == len(VALUES)


def test_diff_reports_added_removed_and_changed(npz, tmp_path):
    changed = dict(VALUES)
    del changed["counts"]
    changed["net/new"] = np.zeros(2, np.float32)
    changed["net/conv/biases"] = VALUES["net/conv/biases"] + np.array([0, 0, 0.5], np.float32)
    changed["net/logits/weights"] = VALUES["net/logits/weights"].reshape(5, 4)
    changed["global_step"] = VALUES["global_step"].astype(np.int32)
    report = _diff(npz, _safetensors(tmp_path, changed))
    assert [v.name for v in report.only_a] == ["counts"]
    assert [v.name for v in report.only_b] == ["net/new"]
    kinds = {c.name: c.kind for c in report.changed}
    assert kinds == {"global_step": "dtype", "net/conv/biases": "values",
                     "net/logits/weights": "shape"}
    biases = next(c for c in report.changed if c.name == "net/conv/biases")
    assert biases.max_abs == 0.5 and biases.rms == pytest.approx(0.5 / np.sqrt(3))
    assert report.equal == 1 and not report.same


def test_diff_int64_is_exact(npz, tmp_path):
    """2**62 + 1 and 2**62 are the same float64: ints must not be compared as floats."""
    off_by_one = dict(VALUES, counts=VALUES["counts"] - np.array([1, 0]))
    report = _diff(npz, _safetensors(tmp_path, off_by_one))
    assert [c.name for c in report.changed] == ["counts"]


@pytest.mark.parametrize("atol, rtol, same", [(0, 0, False), (0.5, 0, True), (0.49, 0, False),
                                              (0, 1 / 6, True), (0, 0.1, False)])
def test_diff_tolerances(npz, tmp_path, atol, rtol, same):
    moved = dict(VALUES, **{"net/conv/biases": VALUES["net/conv/biases"] + [0, 0, 0.5]})
    moved["net/conv/biases"] = moved["net/conv/biases"].astype(np.float32)
    assert _diff(npz, _safetensors(tmp_path, moved), atol=atol, rtol=rtol).same is same


def test_diff_nan_equals_nan_and_not_a_number(tmp_path):
    a = _safetensors(tmp_path, {"x": np.array([np.nan, 1.0, np.inf])}, "a.safetensors")
    b = _safetensors(tmp_path, {"x": np.array([np.nan, 1.0, np.inf])}, "b.safetensors")
    c = _safetensors(tmp_path, {"x": np.array([0.0, 1.0, np.inf])}, "c.safetensors")
    assert _diff(a, b).same
    change = _diff(a, c).changed[0]
    assert change.max_abs == np.inf


def test_diff_strip_prefixes_and_model_only(npz, tmp_path):
    renamed = {"v3/" + k: v for k, v in VALUES.items() if k != "global_step"}
    renamed["v3/net/conv/weights/Adam"] = np.zeros((2, 3, 4), np.float32)
    b = _safetensors(tmp_path, renamed)
    assert not _diff(npz, b, strip_b="v3/").same
    report = _diff(npz, b, strip_b="v3/", model_only=True)   # the step and the slot left out
    assert report.same and report.equal == 4


def test_verify_clean_and_corrupt_npz(npz, tmp_path):
    assert verify(npz).ok
    data = bytearray(npz.read_bytes())
    at = data.index(b"\x93NUMPY") + 200
    data[at] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    report = verify(bad)
    assert not report.ok and len(report.problems) == 1 and "Bad CRC-32" in report.problems[0]


@pytest.mark.tf
def test_v1_v2_and_npz_of_one_model_compare_equal(tmp_path):
    """The same variables saved by TF as V1 and as V2, and exported to npz: no differences."""
    from helpers.tf_factories import Var, save_graph

    variables = [Var(n, v) for n, v in VALUES.items() if v.dtype != np.int64]
    v2 = save_graph(tmp_path / "v2", variables)
    v1 = save_graph(tmp_path / "v1", variables, version="V1")
    np.savez(tmp_path / "same.npz", **v2.values)
    for a, b in ((v1.path, v2.path), (v2.path, tmp_path / "same.npz")):
        report = _diff(a, b)
        assert report.same and report.equal == len(variables), (a, b)


@pytest.mark.tf
def test_diff_of_real_v1_and_v2_files_matches_tf(corpus, tf):
    """sugyan/tensorflow-mnist's regression model, saved as V1 (2017) and as V2 (2018): the
    files differ (retrained), and diff's figures are what TF's own reader gives."""
    a = corpus / "v1_sugyan_regression_2017" / "regression.ckpt"
    b = corpus / "v2_sugyan_regression" / "regression.ckpt"
    ta, tb = tf.train.load_checkpoint(str(a)), tf.train.load_checkpoint(str(b))
    report = _diff(a, b)
    assert [c.name for c in report.changed] == ["regression/W", "regression/b"]
    for change in report.changed:
        delta = ta.get_tensor(change.name).astype(np.float64) - tb.get_tensor(change.name)
        assert change.max_abs == np.abs(delta).max()
        assert change.rms == pytest.approx(np.sqrt(np.square(delta).mean()), rel=1e-12)
