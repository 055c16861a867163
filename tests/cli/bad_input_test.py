"""Bad input through the qat binary: each case must exit non-zero with one
`qat: error:` line that names the offending file, key or node, print no
LibTorch backtrace or uncaught-exception text, and leave the files already
in the run directory byte for byte as they were.

usage: bad_input_test.py QAT_BINARY WORK_DIR
Runs on a 256/128-image Fashion-MNIST subset so that the whole file takes
about a minute; needs the onnx package (the project venv).
"""
import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys

import onnx
from onnx import TensorProto, helper

QAT, WORK = sys.argv[1], os.path.abspath(sys.argv[2])
FASHION = "/usr/share/datasets/fashion-mnist"
failures = []


def write_idx_subset(src_dir, dst_dir, prefix, n):
    """The first n images and labels of a split, as plain IDX files."""
    for kind, item in (("images-idx3-ubyte", 28 * 28), ("labels-idx1-ubyte", 1)):
        with gzip.open(f"{src_dir}/{prefix}-{kind}.gz", "rb") as f:
            data = f.read()
        header = 16 if item > 1 else 8
        count = struct.pack(">I", n)
        with open(f"{dst_dir}/{prefix}-{kind}", "wb") as f:
            f.write(data[:4] + count + data[8:header] + data[header:header + n * item])


def qat(*args):
    return subprocess.run([QAT, "--threads", "2", *args], capture_output=True, text=True, timeout=300)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def expect_error(name, args, must_name, untouched=()):
    """Runs qat with `args`; checks exit code, message and untouched files."""
    before = {p: digest(p) for p in untouched}
    result = qat(*args)
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    problems = []
    if result.returncode == 0:
        problems.append("exit code 0")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines, expected one")
    for text in must_name:
        if not any(text in line for line in errors):
            problems.append(f"error does not name {text!r}")
    for bad in ("terminate called", "Exception raised from", "frame #", "Aborted", "Segmentation"):
        if bad in result.stderr:
            problems.append(f"stderr holds {bad!r}")
    for path, old in before.items():
        if not os.path.exists(path) or digest(path) != old:
            problems.append(f"{path} was changed")
    status = "ok  " if not problems else "FAIL"
    print(f"{status} {name}: exit {result.returncode}: {errors[-1] if errors else result.stderr[-300:]}")
    if problems:
        failures.append(name)
        print("     " + "; ".join(problems))
        print("     stderr tail: " + result.stderr[-800:].replace("\n", "\n     "))


def save_model(path, nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7  # the newest Debian's libonnx checker accepts
    onnx.save(model, path)
    return path


def image_input(channels=1, side=28):
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, side, side])


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    data = f"{WORK}/data"
    os.makedirs(data)
    write_idx_subset(FASHION, data, "train", 256)
    write_idx_subset(FASHION, data, "t10k", 128)
    common = ["--data-dir", data]
    small = ["--model", "resnet8", *common, "--batch-size", "64"]

    # Good files to damage and to protect: a trained run, a sim run, an export.
    run = f"{WORK}/run"
    ok = qat("train", *small, "--epochs", "1", "--out", run, "--no-progress")
    assert ok.returncode == 0, ok.stderr
    checkpoint = f"{run}/checkpoint.pt"
    export = f"{WORK}/export"
    ok = qat("export", *small, "--checkpoint", checkpoint, "--calib-batches", "1", "--out", export)
    assert ok.returncode == 0, ok.stderr
    exported = [f"{export}/{name}" for name in ("model_fp32.onnx", "model_int8.onnx", "encodings.json")]
    sim_run = f"{WORK}/sim_run"
    ok = qat("qat", *small, "--checkpoint", checkpoint, "--calib-batches", "1", "--epochs", "1",
             "--out", sim_run, "--no-progress")
    assert ok.returncode == 0, ok.stderr
    sim_checkpoint = f"{sim_run}/checkpoint.pt"

    # ONNX: truncated, not ONNX at all, unsupported op, inconsistent shapes,
    # wrong image size for the data.
    with open(exported[0], "rb") as f:
        onnx_bytes = f.read()
    truncated_onnx = f"{WORK}/truncated.onnx"
    with open(truncated_onnx, "wb") as f:
        f.write(onnx_bytes[: len(onnx_bytes) // 2])
    expect_error("truncated ONNX", ["eval", "--onnx", truncated_onnx, *common], [truncated_onnx])
    garbage_onnx = f"{WORK}/garbage.onnx"
    with open(garbage_onnx, "wb") as f:
        f.write(os.urandom(4096))
    expect_error("random bytes as ONNX", ["eval", "--onnx", garbage_onnx, *common], [garbage_onnx])
    expect_error("missing ONNX", ["eval", "--onnx", f"{WORK}/nope.onnx", *common], [f"{WORK}/nope.onnx"])

    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    unsupported = save_model(f"{WORK}/unsupported.onnx", [
        helper.make_node("Flatten", ["image"], ["flat"], name="flatten"),
        helper.make_node("Hardmax", ["flat"], ["hard"], name="head.hardmax"),
        helper.make_node("Slice", ["hard", "starts", "ends", "axes"], ["logits"], name="slice"),
    ], [image_input()], [logits], [
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [10]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ])
    expect_error("unsupported op", ["eval", "--onnx", unsupported, *common], [unsupported, "Hardmax", "head.hardmax"])

    # A 3-input-channel conv weight on a 1-channel input: the checker does
    # not see it, the first forward pass must name the node.
    weight = helper.make_tensor("conv.weight", TensorProto.FLOAT, [10, 3, 28, 28], [0.0] * (10 * 3 * 28 * 28))
    inconsistent = save_model(f"{WORK}/inconsistent.onnx", [
        helper.make_node("Conv", ["image", "conv.weight"], ["c"], name="stem.conv"),
        helper.make_node("Flatten", ["c"], ["logits"], name="flatten"),
    ], [image_input()], [logits], [weight])
    expect_error("inconsistent shapes", ["eval", "--onnx", inconsistent, *common], ["stem.conv"])

    cifar_sized = save_model(f"{WORK}/cifar_sized.onnx", [
        helper.make_node("GlobalAveragePool", ["image"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["logits"], name="flatten"),
    ], [image_input(3, 32)], [logits])
    expect_error("wrong image size", ["eval", "--onnx", cifar_sized, *common], [cifar_sized, "[?, 3, 32, 32]", "[?, 1, 28, 28]"])

    # Quantsim configs: unknown key, wrong type, bitwidths out of range,
    # broken JSON; `qat ptq --out` must leave the sim run alone.
    def config(name, text):
        path = f"{WORK}/{name}.json"
        with open(path, "w") as f:
            f.write(text)
        return path

    ptq = ["ptq", *small, "--calib-batches", "1", "--out", sim_run]
    cases = {
        "unknown key": ('{"defaults": {"ops": {"is_outptu_quantized": "True"}}}', "defaults.ops.is_outptu_quantized"),
        "bad type": ('{"defaults": {"params": {"is_symmetric": 1}}}', "defaults.params.is_symmetric"),
        "not JSON": ('{"defaults": ', "malformed JSON"),
    }
    for bits in (0, 1, 17, 33):
        cases[f"bitwidth {bits}"] = (f'{{"defaults": {{"param_bitwidth": {bits}}}}}', "defaults.param_bitwidth")
    for name, (text, key) in cases.items():
        path = config(name.replace(" ", "_"), text)
        expect_error(f"config {name}", [*ptq, "--config", path], [path, key], untouched=[sim_checkpoint])
    expect_error("missing config", [*ptq, "--config", f"{WORK}/nope.json"], [f"{WORK}/nope.json"])
    for bits in ("0", "1", "17", "33"):
        expect_error(f"--w-bits {bits}", [*ptq, "--w-bits", bits], ["--w-bits"])
    for option, value, rule in (("--epochs", "0", "must be 1 or more"), ("--batch-size", "0", "must be 1 or more"),
                                ("--steps-per-epoch", "-1", "must be 0 or more")):
        expect_error(f"{option} {value}", ["train", *small, option, value, "--out", f"{WORK}/never"], [option, rule])
    for option, value, rule in (("--dampen", "-1", "must be 0 or more"), ("--dampen", "nan", "must be 0 or more"),
                                ("--distill-weight", "-0.5", "must be 0 or more"),
                                ("--distill-temperature", "0", "must be more than 0"),
                                ("--lr", "0", "must be more than 0"), ("--lr", "nan", "must be more than 0"),
                                ("--weight-decay", "-1e-4", "must be 0 or more")):
        expect_error(f"{option} {value}", ["qat", *small, option, value, "--out", f"{WORK}/never"], [option, rule])
    bad_config = config("export_bad", '{"defaults": {"activation_bitwidth": 1}}')
    expect_error("export with a bad config", ["export", *small, "--config", bad_config, "--out", export],
                 [bad_config], untouched=exported)

    # Data files: truncated IDX (images, labels), gzip garbage, CIFAR-10
    # records cut short.
    for damaged, size in (("t10k-images-idx3-ubyte", 16 + 100 * 784 + 17), ("t10k-labels-idx1-ubyte", 4)):
        bad_data = f"{WORK}/bad_data_{damaged}"
        shutil.copytree(data, bad_data)
        with open(f"{bad_data}/{damaged}", "r+b") as f:
            f.truncate(size)
        expect_error(f"truncated {damaged}", ["eval", "--model", "resnet8", "--data-dir", bad_data],
                     [f"{bad_data}/{damaged}", "truncated"])
    gz_data = f"{WORK}/bad_gzip"
    shutil.copytree(data, gz_data)
    with open(f"{gz_data}/t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x1f\x8b\x08\x00" + os.urandom(64))
    expect_error("corrupt gzip", ["eval", "--model", "resnet8", "--data-dir", gz_data],
                 [f"{gz_data}/t10k-labels-idx1-ubyte.gz"])
    cifar = f"{WORK}/cifar"
    os.makedirs(cifar)
    record = bytes([3]) + bytes(3072)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        with open(f"{cifar}/{name}", "wb") as f:
            f.write(record * 4)
    with open(f"{cifar}/data_batch_3.bin", "r+b") as f:
        f.truncate(3073 * 2 + 1000)
    expect_error("truncated CIFAR-10", ["train", "--model", "resnet8", "--data", "cifar10", "--data-dir", cifar,
                                        "--out", run, "--resume"], [f"{cifar}/data_batch_3.bin"], untouched=[checkpoint])

    # Checkpoints: truncated, garbage, another architecture, another
    # program's zip; both for --checkpoint and for --resume into the run
    # directory that holds them.
    with open(checkpoint, "rb") as f:
        checkpoint_bytes = f.read()
    damaged = {
        "truncated": checkpoint_bytes[: len(checkpoint_bytes) // 2],
        "garbage": os.urandom(len(checkpoint_bytes) // 4),
        "zeroed middle": checkpoint_bytes[:1000] + bytes(4096) + checkpoint_bytes[5096:],
    }
    other = f"{WORK}/other_run"
    ok = qat("train", "--model", "resnet20", *common, "--epochs", "1", "--out", other, "--no-progress")
    assert ok.returncode == 0, ok.stderr
    with open(f"{other}/checkpoint.pt", "rb") as f:
        damaged["another model's"] = f.read()
    foreign_zip = f"{WORK}/foreign.zip"
    shutil.make_archive(foreign_zip[:-4], "zip", data)
    with open(foreign_zip, "rb") as f:
        damaged["a foreign zip"] = f.read()
    for name, content in damaged.items():
        run_dir = f"{WORK}/ckpt_{name.replace(' ', '_').replace(chr(39), '')}"
        os.makedirs(run_dir)
        path = f"{run_dir}/checkpoint.pt"
        with open(path, "wb") as f:
            f.write(content)
        expect_error(f"{name} checkpoint (--checkpoint)", ["eval", *small, "--checkpoint", path], [path],
                     untouched=[path])
        expect_error(f"{name} checkpoint (--resume)",
                     ["train", *small, "--epochs", "2", "--out", run_dir, "--resume", "--no-progress"], [path],
                     untouched=[path])
    # A sim checkpoint of W8A8 resumed as W4A4: refused, not overwritten.
    expect_error("sim checkpoint of another configuration",
                 ["qat", *small, "--checkpoint", checkpoint, "--calib-batches", "1", "--w-bits", "4", "--a-bits", "4",
                  "--epochs", "2", "--out", sim_run, "--resume", "--no-progress"],
                 [sim_checkpoint, "different quantsim configuration"], untouched=[sim_checkpoint])
    # ... and with its model input at another bitwidth: refused too.
    expect_error("sim checkpoint with another input bitwidth",
                 ["qat", *small, "--checkpoint", checkpoint, "--calib-batches", "1", "--input-bits", "16",
                  "--epochs", "2", "--out", sim_run, "--resume", "--no-progress"],
                 [sim_checkpoint, "different quantsim configuration"], untouched=[sim_checkpoint])
    expect_error("export with a sim checkpoint of another model",
                 ["export", *small, "--sim-checkpoint", f"{other}/checkpoint.pt", "--out", export],
                 [f"{other}/checkpoint.pt"], untouched=exported)

    print(f"{len(failures)} failing case(s)" if failures else "all bad-input cases passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
