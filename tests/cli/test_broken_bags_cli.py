"""`mentor3ad evaluate --data`, `train --bag` and `calibrate --data` on every kind of broken recording (and
`evaluate` / `calibrate` on broken model files): a non-zero exit and exactly one `mentor3ad <cmd>: error: ...`
line naming the bag (the model file), never a traceback.

The commands run as the console script does (``sys.exit(main(argv))``), each in a process forked from one
driver that has imported the package once (a fresh interpreter per case would cost ~4 s of imports); one
kind per command also runs through the real ``mentor3ad`` executable to show both behave the same.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from helpers import TINY_MODEL_CONFIG, run_mentor3ad, train_tiny_model

pytest.importorskip("rosbags")

from mentor3ad.io import msgconv  # noqa: E402
from mentor3ad.io.bags import _typestore, rosbags_factory, write_dataset_bag  # noqa: E402
from mentor3ad.io.datasets.synthetic import generate_sample  # noqa: E402
from mentor3ad.io.inputs import TOPICS, input_mode  # noqa: E402

SIZE = (64, 64)
COMMANDS = ("evaluate", "train", "calibrate")


def _samples(mixed):
    defects = ["good", "dent", "good", "paint", "good", "good"] if mixed else ["good"] * 6
    return [generate_sample(i, SIZE, d, name=f"part/{d}/{i}") for i, d in enumerate(defects)]


def _data_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def _truncate(fraction):
    def breaker(bag):
        path = _data_file(bag)
        os.truncate(path, int(path.stat().st_size * fraction))
    return breaker


def _garbage(bag):
    path = _data_file(bag)
    path.write_bytes(np.random.default_rng(1).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def _flip(offset_of, length=4096):
    def breaker(bag):
        path = _data_file(bag)
        data = bytearray(path.read_bytes())
        start = offset_of(data)
        data[start:start + length] = bytes(b ^ 0x5A for b in data[start:start + length])
        path.write_bytes(bytes(data))
    return breaker


def _chunk_records(data):
    assert data[43] == 0x06  # magic (8) + header record (35): the first chunk
    return 2000  # inside its records


def _summary(data):
    return struct.unpack_from("<Q", data, len(data) - 8 - 29 + 9)[0] + 10


def _sqlite_page(data):
    return 6 * 4096  # the start of a b-tree page (4 KiB pages)


def _metadata(edit):
    def breaker(bag):
        path = bag / "metadata.yaml"
        path.write_text(edit(path.read_text()))
    return breaker


def _missing_file(bag):
    path = _data_file(bag)
    path.rename(path.with_name("moved" + path.suffix))


def _custom(storage, samples, edit_fields=None, types=None, raw=None):
    """A bag written message by message: ``edit_fields(fields)`` may alter the field dicts of a sample,
    ``types`` gives other message types per key (filled with a std_msgs/String), ``raw`` garbage bytes."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    def build(bag):
        shutil.rmtree(bag)
        ts = _typestore()
        make = rosbags_factory(ts)
        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
        rng = np.random.default_rng(2)
        with Writer(bag, version=8, storage_plugin=plugin) as writer:
            conns = {}
            for i, sample in enumerate(samples):
                stamp = 10 ** 18 + i * 10 ** 8
                fields = {"image": msgconv.rgb_to_image_fields(sample.rgb),
                          "mask": msgconv.rgb_to_image_fields((sample.mask > 0).astype(np.uint8) * 255, "mono8"),
                          **input_mode("points").to_fields(sample.xyz, None, "32FC1")}
                if edit_fields:
                    edit_fields(fields)
                for key, value in fields.items():
                    msgtype = (types or {}).get(key, TOPICS[key].msg_type)
                    if key not in conns:
                        conns[key] = writer.add_connection(TOPICS[key].recorded, msgtype, typestore=ts)
                    if raw and key in raw:
                        data = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
                    elif msgtype != TOPICS[key].msg_type:
                        data = ts.serialize_cdr(ts.types[msgtype](data="not an image"), msgtype)
                    else:
                        data = ts.serialize_cdr(make.build(TOPICS[key].kind, value, make.header(stamp, "cam")), msgtype)
                    writer.write(conns[key], stamp, data)
    return build


def _edit(key, **changes):
    def edit(fields):
        fields[key].update({k: (v(fields[key]) if callable(v) else v) for k, v in changes.items()})
    return edit


# kind -> (storage, breaker(bag, mixed) or None: the base bag as it is, for the commands it is wrong for)
KINDS = {
    "no_metadata_yaml": ("sqlite3", lambda bag, mixed: (bag / "metadata.yaml").unlink()),
    "empty_directory": ("sqlite3", lambda bag, mixed: [p.unlink() for p in bag.iterdir()]),
    "metadata_yaml_garbage": ("sqlite3", lambda bag, mixed: _metadata(lambda t: ":::\n  - [unclosed")(bag)),
    "metadata_yaml_lists_a_missing_file": ("mcap", lambda bag, mixed: _missing_file(bag)),
    "metadata_yaml_wrong_storage": ("sqlite3", lambda bag, mixed: _metadata(
        lambda t: t.replace("storage_identifier: sqlite3", "storage_identifier: mcap"))(bag)),
    "metadata_yaml_future_version": ("mcap", lambda bag, mixed: _metadata(
        lambda t: t.replace("version: 8", "version: 99"))(bag)),
    "mcap_zero_length": ("mcap", lambda bag, mixed: _truncate(0.0)(bag)),
    "mcap_truncated_10": ("mcap", lambda bag, mixed: _truncate(0.1)(bag)),
    "mcap_truncated_50": ("mcap", lambda bag, mixed: _truncate(0.5)(bag)),
    "mcap_truncated_90": ("mcap", lambda bag, mixed: _truncate(0.9)(bag)),
    "mcap_without_footer": ("mcap", lambda bag, mixed: os.truncate(_data_file(bag), _data_file(bag).stat().st_size - 20)),
    "mcap_garbage": ("mcap", lambda bag, mixed: _garbage(bag)),
    "mcap_chunk_bytes_flipped": ("mcap", lambda bag, mixed: _flip(_chunk_records)(bag)),
    "mcap_summary_bytes_flipped": ("mcap", lambda bag, mixed: _flip(_summary, 40)(bag)),
    "db3_zero_length": ("sqlite3", lambda bag, mixed: _truncate(0.0)(bag)),
    "db3_truncated_10": ("sqlite3", lambda bag, mixed: _truncate(0.1)(bag)),
    "db3_truncated_50": ("sqlite3", lambda bag, mixed: _truncate(0.5)(bag)),
    "db3_truncated_90": ("sqlite3", lambda bag, mixed: _truncate(0.9)(bag)),
    "db3_garbage": ("sqlite3", lambda bag, mixed: _garbage(bag)),
    "db3_corrupt_page": ("sqlite3", lambda bag, mixed: _flip(_sqlite_page, 64)(bag)),
    "wrong_message_types": ("mcap", lambda bag, mixed: _custom("mcap", _samples(mixed),
                                                                types={"image": "std_msgs/msg/String"})(bag)),
    "garbage_cdr": ("sqlite3", lambda bag, mixed: _custom("sqlite3", _samples(mixed), raw={"points"})(bag)),
    "mask_of_another_size": ("mcap", lambda bag, mixed: _custom("mcap", _samples(mixed), _edit(
        "mask", height=32, width=32, step=32, data=lambda f: f["data"][:32 * 32]))(bag)),
    "image_encoding_32FC1": ("mcap", lambda bag, mixed: _custom("mcap", _samples(mixed), _edit("image", encoding="32FC1"))(bag)),
    "cloud_data_truncated": ("sqlite3", lambda bag, mixed: _custom("sqlite3", _samples(mixed), _edit(
        "points", data=lambda f: f["data"][:1000]))(bag)),
    "cloud_a_million_metres_away": ("mcap", lambda bag, mixed: _custom("mcap", _samples(mixed), _edit(
        "points", data=lambda f: (np.frombuffer(f["data"], "<f4") + np.float32(1e6)).tobytes()))(bag)),
    "no_points_topic": ("mcap", lambda bag, mixed: _custom("mcap", _samples(mixed), lambda f: f.pop("points"))(bag)),
    "wrong_labels_for_the_command": ("mcap", None),  # defective parts for train/calibrate, no masks for evaluate
}


def _nan_weights(path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    save_file({k: v.fill_(float("nan")) for k, v in load_file(str(path)).items()}, str(path), metadata=metadata)


MODEL_KINDS = {  # (checked with the model path in place of the bag)
    "model_missing": lambda path: path.unlink(),
    "model_is_a_directory": lambda path: (path.unlink(), path.mkdir()),
    "model_zero_length": lambda path: os.truncate(path, 0),
    "model_truncated": lambda path: os.truncate(path, path.stat().st_size // 2),
    "model_sparse_2gib": lambda path: os.truncate(path, 2 ** 31),
    "model_garbage": lambda path: path.write_bytes(b"\xff" * 4096),
    "model_nan_weights": _nan_weights,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken_bags")
    model = root / "model.safetensors"
    train_tiny_model(model)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_MODEL_CONFIG))))
    cases = []
    for kind, (storage, breaker) in KINDS.items():
        for command in COMMANDS:
            mixed = command == "evaluate"
            bag = root / kind / command / "bag"
            bag.parent.mkdir(parents=True)
            if breaker is None:  # the right container with the wrong content for this command
                if mixed:
                    samples = _samples(True)
                    for s in samples:
                        s.mask, s.label = None, None
                else:
                    samples = _samples(True)
                write_dataset_bag(samples, bag, storage=storage)
            else:
                write_dataset_bag(_samples(mixed), bag, storage=storage)
                breaker(bag, mixed)
            out = bag.parent / "out"
            argv = {"evaluate": ["evaluate", "--model", model, "--data", bag, "--out", out, "--no-naive"],
                    "train": ["train", "--bag", bag, "--config", config, "--out", out / "m.safetensors"],
                    "calibrate": ["calibrate", "--model", model, "--data", bag, "--out", out / "c.safetensors"]}[command]
            cases.append({"kind": kind, "command": command, "bag": str(bag), "argv": [*map(str, argv), "--no-progress"]})
    good = write_dataset_bag(_samples(False), root / "good_bag")
    for kind, breaker in MODEL_KINDS.items():
        broken = root / "models" / kind / "model.safetensors"
        broken.parent.mkdir(parents=True)
        shutil.copyfile(model, broken)
        breaker(broken)
        for command in ("evaluate", "calibrate"):
            argv = [command, "--model", broken, "--data", good, "--out", broken.parent / command, "--no-progress"]
            cases.append({"kind": kind, "command": command, "bag": str(broken), "argv": list(map(str, argv))})
    return root, model, cases


DRIVER = textwrap.dedent("""
    import json, os, sys, time, traceback
    import mentor3ad.cli, mentor3ad.jobs, mentor3ad.model.detector, mentor3ad.model.training, mentor3ad.eval.report
    import rosbags.rosbag2, rosbags.typesys, timm, mentor3ad.backbones, mentor3ad.features.extractor
    mentor3ad.backbones.names("rgb")  # imports every backbone module once, before the forks
    cases, out_dir = json.load(open(sys.argv[1])), sys.argv[2]
    results = []
    for index, case in enumerate(cases):
        out, err = os.path.join(out_dir, f"{index}.out"), os.path.join(out_dir, f"{index}.err")
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the console script: sys.exit(main())
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT), 2)
            try:
                code = mentor3ad.cli.main(case["argv"])
            except SystemExit as exc:
                code = exc.code
            except BaseException:
                traceback.print_exc()
                code = 1
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code or 0)
        _, status = os.waitpid(pid, 0)
        results.append({**case, "code": os.waitstatus_to_exitcode(status), "stdout": open(out).read(),
                        "stderr": open(err).read(), "seconds": time.monotonic() - started})
    json.dump(results, open(os.path.join(out_dir, "results.json"), "w"))
""")


@pytest.fixture(scope="module")
def results(world):
    root, _, cases = world
    (root / "cases.json").write_text(json.dumps(cases))
    (root / "driver.py").write_text(DRIVER)
    (root / "runs").mkdir()
    subprocess.run([sys.executable, str(root / "driver.py"), str(root / "cases.json"), str(root / "runs")], check=True,
                   timeout=900)
    found = json.loads((root / "runs" / "results.json").read_text())
    print("slowest:", sorted(((round(r["seconds"], 2), r["kind"], r["command"]) for r in found), reverse=True)[:8])
    return {(r["kind"], r["command"]): r for r in found}


def _check(result):
    command, bag = result["command"], result["bag"]
    lines = result["stderr"].splitlines()
    errors = [line for line in lines if line.startswith(f"mentor3ad {command}: error:")]
    others = [line for line in lines if line not in errors and not line.startswith(("INFO ", "WARNING ", "DEBUG "))]
    problems = []
    if result["code"] == 0:
        problems.append("exit code 0")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif bag not in errors[0]:
        problems.append("the error does not name the bag")
    if "Traceback" in result["stderr"] or others:
        problems.append(f"other output: {others[:3]}")
    return problems


def test_every_kind_of_broken_bag_gives_one_error_line_naming_the_bag(results):
    assert len(KINDS) >= 20
    failures = {f"{kind}/{command}": (_check(r), r["stderr"][-600:]) for (kind, command), r in results.items()
                if _check(r) and kind in KINDS}
    assert not failures, json.dumps(failures, indent=1)


def test_every_kind_of_broken_model_file_gives_one_error_line_naming_it(results):
    cases = {key: r for key, r in results.items() if key[0] in MODEL_KINDS}
    assert len(cases) == 2 * len(MODEL_KINDS)
    failures = {f"{kind}/{command}": (_check(r), r["stderr"][-600:]) for (kind, command), r in cases.items() if _check(r)}
    assert not failures, json.dumps(failures, indent=1)
    assert "non-finite (NaN/Inf) weights" in results[("model_nan_weights", "evaluate")]["stderr"]
    assert "model file not found" in results[("model_is_a_directory", "calibrate")]["stderr"]
    assert all(r["code"] == 1 for r in cases.values())  # ModelLoadError: 1 (2 is for configuration errors)


def test_the_errors_say_what_is_wrong(results):
    expected = {
        "mcap_chunk_bytes_flipped": r"chunk 0 at byte 43 \(to byte \d+\) is corrupt: CRC-32",
        "mcap_summary_bytes_flipped": r"summary \(index\) section before byte \d+ is corrupt",
        "db3_corrupt_page": r"is corrupt \(SQLite quick_check:|not a readable SQLite database",
        "mcap_truncated_50": r"truncated",
        "db3_truncated_50": r"is damaged|cannot (open|read) bag",
        "wrong_message_types": r"topic /camera/image has type std_msgs/msg/String, expected sensor_msgs/msg/Image",
        "mask_of_another_size": r"mask size 32x32 does not match image size 64x64",
        "image_encoding_32FC1": r"unsupported image encoding '32FC1'",
        "cloud_a_million_metres_away": r"points outside the working volume|no .*pairs",
        "no_points_topic": r"has no topic\(s\) /camera/points",
    }
    for kind, pattern in expected.items():
        for command in COMMANDS:
            assert __import__("re").search(pattern, results[(kind, command)]["stderr"]), (kind, command)
    assert "labelled defective" in results[("wrong_labels_for_the_command", "train")]["stderr"]
    assert "labelled defective" in results[("wrong_labels_for_the_command", "calibrate")]["stderr"]
    assert "/camera/gt_mask" in results[("wrong_labels_for_the_command", "evaluate")]["stderr"]


def test_the_unbroken_bags_work(world, tmp_path):
    _, model, _ = world
    good, mixed = write_dataset_bag(_samples(False), tmp_path / "good"), write_dataset_bag(_samples(True), tmp_path / "mixed",
                                                                                      storage="mcap")
    code, _, output = run_mentor3ad("calibrate", "--model", model, "--data", good, "--out", tmp_path / "c.safetensors",
                                    "--no-progress")
    assert code == 0, output
    code, _, output = run_mentor3ad("evaluate", "--model", model, "--data", mixed, "--out", tmp_path / "report",
                                    "--no-naive", "--no-progress")
    assert code == 0, output


@pytest.mark.parametrize("kind, command", [("mcap_chunk_bytes_flipped", "evaluate"), ("garbage_cdr", "train"),
                                           ("db3_corrupt_page", "calibrate")])
def test_the_real_console_script_behaves_the_same(world, results, kind, command):
    case = results[(kind, command)]
    code, stdout, output = run_mentor3ad(*case["argv"][0:])
    stderr = output[len(stdout):]
    assert code == case["code"] != 0
    assert not _check({**case, "code": code, "stderr": stderr}), stderr
