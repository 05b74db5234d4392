"""Attack model files built from a real tiny checkpoint: each one is refused by ``Detector.load`` with a
``ModelLoadError`` naming the reason; the large ones quickly and without reading or allocating their size."""
import json
import os
import re
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import train_tiny_model
from mentor3ad.errors import ModelLoadError
from mentor3ad.model import checkpoint
from mentor3ad.model.checkpoint import METADATA_KEY, TENSOR_PREFIX, expected_tensors
from mentor3ad.model.detector import Detector
from mentor3ad.model.heads import Mentor3ADHeads

GIB = 2 ** 30
FAST_S = 2.0  # refusals of huge files: well under the time reading them would take
SMALL_RSS = 100 * 2 ** 20  # ... and well under their size in memory


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    detector = train_tiny_model(path)
    return path, detector


@pytest.fixture(scope="module")
def extractor(model):
    return model[1].extractor


def _parts(path):
    """(metadata dict, {name: tensor}) of a model file, unvalidated."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    tensors = {k[len(TENSOR_PREFIX):]: v for k, v in load_file(str(path)).items()}
    return metadata, tensors


def _write(path, tensors, metadata, metadata_text=None):
    """A safetensors file with arbitrary (also non-finite) tensors and metadata (text as given)."""
    from safetensors.torch import save_file

    text = metadata_text if metadata_text is not None else json.dumps(metadata)
    save_file({TENSOR_PREFIX + k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={METADATA_KEY: text})
    return path


def _write_header_only(path, shapes, metadata, size=None):
    """A file whose safetensors header describes F32 ``shapes`` (contiguous), sparse-extended to the size the
    header describes (or ``size``): no data bytes are actually written."""
    header, offset = {"__metadata__": {METADATA_KEY: json.dumps(metadata)}}, 0
    for name, shape in shapes.items():
        length = 4 * int(np.prod(shape, dtype=np.int64))
        header[TENSOR_PREFIX + name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + length]}
        offset += length
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    os.truncate(path, size if size is not None else 8 + len(raw) + offset)
    return path


def _status_kib(key):
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _refusal_cost(load):
    """(ModelLoadError, seconds, peak RSS growth in bytes) of a load that must be refused."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load()
    seconds = time.perf_counter() - started
    rss = (_status_kib("VmHWM") - before) * 1024
    print(f"refused in {seconds * 1000:.0f} ms, peak RSS +{rss / 2 ** 20:.1f} MiB: {info.value}"[:300])
    return info.value, seconds, rss


def test_untouched_rewrite_still_loads(model, extractor, tmp_path):
    # the attack files below are written by the same helper: only their attack is wrong
    metadata, tensors = _parts(model[0])
    copy = _write(tmp_path / "copy.safetensors", tensors, metadata)
    assert Detector.load(copy, extractor=extractor).threshold == model[1].threshold


def test_all_head_weights_nan(model, extractor, tmp_path):
    metadata, tensors = _parts(model[0])
    poisoned = _write(tmp_path / "nan.safetensors", {k: torch.full_like(v, float("nan")) for k, v in tensors.items()},
                      metadata)
    with pytest.raises(ModelLoadError, match=r"non-finite \(NaN/Inf\) weights in .*refusing the model"):
        Detector.load(poisoned, extractor=extractor)


def test_one_nan_element_in_one_bias(model, extractor, tmp_path):
    metadata, tensors = _parts(model[0])
    tensors["mfm.fusion_mlp.0.bias"][3] = float("nan")
    poisoned = _write(tmp_path / "one_nan.safetensors", tensors, metadata)
    with pytest.raises(ModelLoadError, match=r"non-finite \(NaN/Inf\) weights in mfm\.fusion_mlp\.0\.bias;"):
        Detector.load(poisoned, extractor=extractor)


@pytest.mark.parametrize("threshold", ["Infinity", "-Infinity", "NaN", '"0.5"', "null", "true"])
def test_threshold_that_is_not_a_finite_number(model, extractor, tmp_path, threshold):
    metadata, tensors = _parts(model[0])
    text = json.dumps({**metadata, "threshold": "@@"}).replace('"@@"', threshold)
    poisoned = _write(tmp_path / "threshold.safetensors", tensors, metadata, metadata_text=text)
    with pytest.raises(ModelLoadError, match="the threshold must be a finite number, got"):
        Detector.load(poisoned, extractor=extractor)


def test_non_finite_number_in_the_stored_config(model, extractor, tmp_path):
    metadata, tensors = _parts(model[0])
    metadata["config"]["model"]["smoothing_sigma"] = float("nan")
    poisoned = _write(tmp_path / "sigma.safetensors", tensors, metadata)
    with pytest.raises(ModelLoadError, match=r"config\.model\.smoothing_sigma is nan \(not a finite number\)"):
        Detector.load(poisoned, extractor=extractor)


def _other_heads(metadata, dim=152):
    config = checkpoint.Mentor3ADConfig.from_dict(metadata["config"])
    heads = Mentor3ADHeads(dim, dim, config.model, seed=1)
    return {k: v.detach().clone() for k, v in heads.state_dict().items()}


def test_heads_for_other_features_than_the_stored_identity(model, extractor, tmp_path):
    metadata, _ = _parts(model[0])
    assert (metadata["rgb_dim"], metadata["xyz_dim"]) == (32, 64)
    # metadata dims and tensors consistently 152-d, the stored identity (and the extractor) 32/64-d
    poisoned = _write(tmp_path / "dims.safetensors", _other_heads(metadata), {**metadata, "rgb_dim": 152, "xyz_dim": 152})
    with pytest.raises(ModelLoadError, match="heads are for 152/152-channel features but the stored backbone "
                                             "identity gives 32/64"):
        Detector.load(poisoned, extractor=extractor)


def test_self_consistent_file_for_another_extractor_is_refused_before_its_tensors_are_read(
        model, extractor, tmp_path, monkeypatch):
    metadata, _ = _parts(model[0])
    identity = json.loads(json.dumps(metadata["backbone_identity"]))
    identity.update(rgb_dim=152, xyz_dim=152)
    identity["rgb"]["out_dim"] = identity["points"]["out_dim"] = 152
    poisoned = _write(tmp_path / "identity.safetensors", _other_heads(metadata),
                      {**metadata, "rgb_dim": 152, "xyz_dim": 152, "backbone_identity": identity})
    assert checkpoint.read_checkpoint_header(poisoned).rgb_dim == 152  # the file itself is consistent
    reads = []
    monkeypatch.setattr(checkpoint, "read_tensors", lambda checked: reads.append(checked) or {})
    with pytest.raises(ModelLoadError, match=r"different backbone features than this extractor provides "
                                             r"\(differs in: .*rgb_dim.*xyz_dim"):
        Detector.load(poisoned, extractor=extractor)
    assert reads == []


def test_tensors_that_do_not_fit_the_stored_dims(model, extractor, tmp_path):
    metadata, _ = _parts(model[0])
    poisoned = _write(tmp_path / "shapes.safetensors", _other_heads(metadata), metadata)
    with pytest.raises(ModelLoadError, match=r"tensor \S+ is F32 \([\d, ]*152[\d, ]*\), the config needs F32 \((\d+, )?(32|64),?\)"):
        Detector.load(poisoned, extractor=extractor)


def test_huge_dimension_refused_before_any_allocation(model, extractor, tmp_path):
    metadata, tensors = _parts(model[0])
    metadata["config"]["model"]["mfm_hidden_dim"] = 10_000_000
    poisoned = _write(tmp_path / "huge_dim.safetensors", tensors, metadata)
    error, seconds, rss = _refusal_cost(lambda: Detector.load(poisoned, extractor=extractor))
    assert "model.mfm_hidden_dim = 10000000 exceeds the plausible maximum 16384" in str(error)
    assert seconds < FAST_S and rss < SMALL_RSS, (seconds, rss)


def test_dimensions_within_bounds_but_gigabytes_of_heads(model, extractor, tmp_path):
    # two widths at their bound: 0.54 G parameters; the header describes them exactly (a sparse 2 GiB file)
    metadata, _ = _parts(model[0])
    metadata["config"]["model"].update(mfm_hidden_dim=16384, mgm_hidden_dim=16384)
    config = checkpoint.Mentor3ADConfig.from_dict(metadata["config"])
    poisoned = _write_header_only(tmp_path / "wide.safetensors", expected_tensors(config, 32, 64), metadata)
    assert poisoned.stat().st_size > 2 * GIB and poisoned.stat().st_blocks * 512 < 2 ** 20
    error, seconds, rss = _refusal_cost(lambda: Detector.load(poisoned, extractor=extractor))
    assert re.search(r"describes heads with [\d,]+ parameters \(\d+\.\d GiB\), more than the plausible maximum",
                     str(error))
    assert seconds < FAST_S and rss < SMALL_RSS, (seconds, rss)


def test_sparse_2gib_file_with_a_valid_header(model, extractor, tmp_path):
    poisoned = tmp_path / "sparse.safetensors"
    shutil.copyfile(model[0], poisoned)
    described = poisoned.stat().st_size
    os.truncate(poisoned, 2 * GIB)
    error, seconds, rss = _refusal_cost(lambda: Detector.load(poisoned, extractor=extractor))
    assert f"corrupt or truncated file: {2 * GIB} bytes, the header describes {described}" in str(error)
    assert seconds < FAST_S and rss < SMALL_RSS, (seconds, rss)


def test_header_claiming_a_2gib_tensor(model, extractor, tmp_path):
    metadata, tensors = _parts(model[0])
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    shapes["rgb_mean"] = (2 * GIB // 4,)
    claimed = _write_header_only(tmp_path / "claim.safetensors", shapes, metadata)  # sparse, size as described
    error, seconds, rss = _refusal_cost(lambda: Detector.load(claimed, extractor=extractor))
    assert "tensor rgb_mean is F32 (536870912,), the config needs F32 (32,)" in str(error)
    assert seconds < FAST_S and rss < SMALL_RSS, (seconds, rss)
    # the same header on a small file: refused for the size before the shapes matter
    small = _write_header_only(tmp_path / "claim_small.safetensors", shapes, metadata, size=4096)
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        Detector.load(small, extractor=extractor)


def test_overlapping_tensors(model, extractor, tmp_path):
    metadata, tensors = _parts(model[0])
    good = _write(tmp_path / "good.safetensors", tensors, metadata)
    raw = good.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    a, b = TENSOR_PREFIX + "rgb_mean", TENSOR_PREFIX + "xyz_mean"  # both 1-d; point b into a's bytes
    start = header[a]["data_offsets"][0]
    header[b]["data_offsets"] = [start, start + 4 * header[b]["shape"][0]]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    poisoned = tmp_path / "overlap.safetensors"
    poisoned.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])
    with pytest.raises(ModelLoadError, match="overlapping or gapped tensors"):
        Detector.load(poisoned, extractor=extractor)


def test_backbone_options_describing_a_giant_network(model, tmp_path):
    metadata, tensors = _parts(model[0])
    metadata["config"]["features"]["rgb_options"]["model_kwargs"].update(embed_dim=16384, depth=64, num_heads=2)
    poisoned = _write(tmp_path / "giant_backbone.safetensors", tensors, metadata)
    error, seconds, rss = _refusal_cost(lambda: Detector.load(poisoned))  # builds its own extractor
    assert re.search(r"backbones with [\d,]+ parameters, more than the plausible maximum", str(error))
    assert seconds < 10 * FAST_S and rss < 4 * SMALL_RSS, (seconds, rss)  # (includes importing timm)


@pytest.mark.parametrize("name, value, reason", [
    ("mfm.*weight", 3e38, r"its (rgb|xyz|mtr) score map is non-finite"),  # overflows to inf/NaN in the MLPs
    ("rgb_scale", 0.0, r"its (rgb|xyz|mtr) score map is non-finite"),  # division by zero in the standardisation
    ("voting.ocsvm.input_scale", 0.0, r"OC-SVM output is non-finite"),
    ("voting.ocsvm.rho", -1e30, r"OC-SVM output is at most -1e\+30 on every patch, its map is ~0 and every part "
                                r"would PASS"),
])
def test_finite_weights_that_break_the_model_fail_the_self_test(model, extractor, tmp_path, name, value, reason):
    metadata, tensors = _parts(model[0])
    hits = [k for k in tensors if re.fullmatch(name.replace(".", r"\.").replace("*", ".*"), k)]
    assert hits
    for key in hits:
        tensors[key] = torch.full_like(tensors[key], value)
    poisoned = _write(tmp_path / "finite.safetensors", tensors, metadata)
    assert checkpoint.read_checkpoint(poisoned)  # every value is finite: only the self-test can see it
    with pytest.raises(ModelLoadError, match="fails its self-test: (the Voting Module.s )?" + reason):
        Detector.load(poisoned, extractor=extractor)


def test_threshold_no_score_can_exceed(model, extractor, tmp_path):
    metadata, tensors = _parts(model[0])
    poisoned = _write(tmp_path / "high.safetensors", tensors, {**metadata, "threshold": 1e30})
    with pytest.raises(ModelLoadError, match=r"the threshold 1e\+30 is not below the largest score the model can "
                                             r"produce \(1\.142e\+26\): no part could ever FAIL"):
        Detector.load(poisoned, extractor=extractor)


def test_file_replaced_between_header_and_tensors(model, tmp_path):
    path = tmp_path / "moving.safetensors"
    shutil.copyfile(model[0], path)
    checked = checkpoint.read_checkpoint_header(path)
    metadata, tensors = _parts(model[0])
    _write(path, tensors, {**metadata, "threshold": metadata["threshold"] + 1.0})
    with pytest.raises(ModelLoadError, match="changed while it was being loaded"):
        checkpoint.read_tensors(checked)


def test_save_refuses_non_finite_threshold_and_weights(model, tmp_path):
    detector = model[1]
    target = tmp_path / "refused.safetensors"
    old = detector.threshold
    try:
        detector.threshold = float("inf")
        with pytest.raises(ModelLoadError, match=r"refusing to save .*the threshold is inf \(calibrate"):
            detector.save(target)
    finally:
        detector.threshold = old
    bias = detector.heads.mgm.xyz_to_rgb.head[0].bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias[0] = float("nan")
        with pytest.raises(ModelLoadError, match=r"refusing to save .*non-finite weights in mgm\.xyz_to_rgb\.head\.0\.bias"):
            detector.save(target)
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary was written
    assert detector.save(target).is_file()


def test_save_stores_undefined_diagnostics_as_null(model, extractor, tmp_path):
    detector = model[1]
    detector.training_info["undefined_rate"] = float("nan")
    detector.training_info["curve"] = [1.0, float("inf")]
    try:
        path = detector.save(tmp_path / "diagnostics.safetensors")
    finally:
        del detector.training_info["undefined_rate"], detector.training_info["curve"]
    loaded = Detector.load(path, extractor=extractor)
    assert loaded.training_info["undefined_rate"] is None and loaded.training_info["curve"] == [1.0, None]
    config = detector.config  # frozen: a corrupted config is a replaced one
    try:
        detector.config = config.replace(model={"smoothing_sigma": float("nan")})
        with pytest.raises(ModelLoadError, match=r"refusing to save .*non-finite numbers in "
                                                 r"metadata\.config\.model\.smoothing_sigma"):
            detector.save(tmp_path / "bad_config.safetensors")
    finally:
        detector.config = config


# ------------------------------------------------------------------ files that are no model: nothing of them echoed
SHADOW = b"root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n"


def _not_a_model_files(tmp_path):
    yield "shadow_like", SHADOW
    yield "small_length_then_secret", struct.pack("<Q", 24) + b"SECRET-TOKEN=hunter2\xff\xfe\x00\x01" + b"x" * 64
    yield "json_but_a_list", struct.pack("<Q", 10) + b'["SECRET"]'
    yield "binary", bytes(range(256)) * 4
    proc = Path("/proc/self/environ")
    if proc.is_file():
        yield "proc_self_environ", proc  # a real file whose size says 0 and whose content is the environment


@pytest.mark.parametrize("kind", ["shadow_like", "small_length_then_secret", "json_but_a_list", "binary",
                                  "proc_self_environ"])
def test_a_file_that_is_no_model_is_refused_without_echoing_its_bytes(tmp_path, kind):
    files = dict(_not_a_model_files(tmp_path))
    if kind not in files:
        pytest.skip("no /proc/self/environ here")
    source = files[kind]
    path = source if isinstance(source, Path) else tmp_path / f"{kind}.safetensors"
    if not isinstance(source, Path):
        path.write_bytes(source)
    content = path.read_bytes()
    with pytest.raises(ModelLoadError) as info:
        checkpoint.read_checkpoint_header(path)
    message = str(info.value)
    assert message == f"{path} is not a mentor3ad model file (no safetensors header: corrupt or truncated, or " \
                      "another kind of file)"
    (length,) = struct.unpack("<Q", content[:8].ljust(8, b"\0"))
    leaked = [str(length), str(len(content)), content[:8].decode("latin-1"), "0x", "SECRET", "root"]
    assert not [text for text in leaked if text in message.replace(str(path), "")], message


def test_deeply_nested_json_is_a_one_line_refusal_not_a_recursion_error(model, tmp_path):
    nested = b"[" * 200_000 + b"]" * 200_000
    header_file = tmp_path / "nested_header.safetensors"
    header_file.write_bytes(struct.pack("<Q", len(nested)) + nested)
    with pytest.raises(ModelLoadError, match="is not a mentor3ad model file"):
        checkpoint.read_checkpoint_header(header_file)
    metadata, tensors = _parts(model[0])
    metadata_file = _write(tmp_path / "nested_metadata.safetensors", tensors, metadata,
                           metadata_text="[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match="metadata is nested too deeply"):
        checkpoint.read_checkpoint_header(metadata_file)
    config_file = _write(tmp_path / "nested_config.safetensors", tensors, metadata, metadata_text=json.dumps(
        {**metadata, "training_info": "@@"}).replace('"@@"', '{"a": ' * 990 + "1" + "}" * 990))
    with pytest.raises(ModelLoadError, match="nested too deeply"):
        checkpoint.read_checkpoint_header(config_file)


def test_mentor3ad_evaluate_refuses_a_nested_header_in_one_line(tmp_path):
    from helpers import run_mentor3ad
    from mentor3ad.io.datasets.synthetic import generate_cell_dataset

    nested = b"[" * 200_000 + b"]" * 200_000
    path = tmp_path / "nested.safetensors"
    path.write_bytes(struct.pack("<Q", len(nested)) + nested)
    data = tmp_path / "data"
    generate_cell_dataset(data, n_train=1, n_val=1, n_test_good=1, n_test_per_defect=1, resolution=(32, 32),
                          defect_types=["dent"])
    code, _, output = run_mentor3ad("evaluate", "--model", path, "--data", data, "--out", tmp_path / "out", "--no-naive")
    assert code == 1 and "Traceback" not in output, output
    assert output.strip().splitlines()[-1] == (f"mentor3ad evaluate: error: {path} is not a mentor3ad model file (no "
                                                "safetensors header: corrupt or truncated, or another kind of file)")


@pytest.mark.parametrize("threshold", [0.0, -1.0, -1e-9])
def test_a_threshold_no_score_stays_at_or_below_is_refused(model, extractor, tmp_path, threshold):
    metadata, tensors = _parts(model[0])
    poisoned = _write(tmp_path / "low.safetensors", tensors, {**metadata, "threshold": threshold})
    with pytest.raises(ModelLoadError, match=r"the threshold must be above 0 \(image scores are >= 0: every part "
                                             r"would FAIL\), got"):
        Detector.load(poisoned, extractor=extractor)


def test_model_locations_are_checked_before_the_file_is_looked_at(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    inside = models / "gland.safetensors"
    assert checkpoint.check_model_location(inside, [models]) == inside.resolve()  # need not exist yet
    assert checkpoint.check_model_location("/etc/shadow", []) == Path("/etc/shadow")  # no directories: no limit
    for outside in ("/etc/shadow", models / ".." / "x.safetensors", tmp_path / "missing.safetensors"):
        with pytest.raises(ModelLoadError) as info:
            checkpoint.check_model_location(outside, [models])
        assert str(info.value) == (f"model_path {outside} is outside the allowed model directories ({models}); "
                                   "refusing to open it")
    link = models / "link.safetensors"
    link.symlink_to("/etc/passwd")
    with pytest.raises(ModelLoadError, match="outside the allowed model directories"):
        checkpoint.check_model_location(link, [models])


def test_a_header_that_exhausts_memory_is_a_one_line_refusal(tmp_path):
    """A 15 MiB header of numbers (~ 7.5 M list items: about 60 MiB as Python objects) read by ``mentor3ad
    evaluate`` in a process whose address space is limited to what it uses plus 32 MiB."""
    import subprocess
    import sys

    from mentor3ad.io.datasets.synthetic import generate_cell_dataset

    header = b'{"a": [' + b"0," * (15 * 2 ** 19) + b"0]}"
    path = tmp_path / "huge_header.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    data = tmp_path / "data"
    generate_cell_dataset(data, n_train=1, n_val=1, n_test_good=1, n_test_per_defect=1, resolution=(32, 32),
                          defect_types=["dent"])
    script = ("import re, resource, sys\n"
              "import mentor3ad.cli as cli, mentor3ad.jobs, mentor3ad.model.detector, mentor3ad.eval.report\n"
              "used = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
              "resource.setrlimit(resource.RLIMIT_AS, (used + 32 * 2 ** 20, resource.RLIM_INFINITY))\n"
              "sys.exit(cli.main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, "evaluate", "--model", str(path), "--data", str(data),
                           "--out", str(tmp_path / "out"), "--no-naive"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"mentor3ad evaluate: error: {path}: not enough memory to validate "
                                                    "its header (at most 16 MiB of JSON); refusing it"), proc.stderr
