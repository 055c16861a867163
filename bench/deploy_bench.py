#!/usr/bin/env python3
"""Deployment benchmark: FP32 vs INT8 (QDQ) exports in ONNX Runtime and OpenVINO.

Runs with the project venv (.venv/bin/python). Each EXPORT_DIR is what
`qat export` writes (model_fp32.onnx, model_int8.onnx); for each model and
runtime it measures the file size, top-1 accuracy on the full Fashion-MNIST
test set (10k images), latency at batch 1 (median of timed single-image
runs) and throughput at batch 64, each the best of several rounds in which
FP32 and INT8 take turns, and prints a markdown table
(bench/results/deploy.md has the commands that produced it). When the
directory holds the sim's test-set logits (`qat export --sim-logits`), a
second table compares each runtime's INT8 predictions with the sim's.

    .venv/bin/python bench/deploy_bench.py runs/export_resnet20 runs/export_resnet18

OpenVINO runs at f32 inference precision (INFERENCE_PRECISION_HINT), as in
tests/fixtures/run_exported.py: on CPUs with bf16 support its default would
run the FP32 model in bf16, which is a third configuration, not FP32.
"""
import argparse
import gzip
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

MEAN, STD = 0.2860405969887955, 0.3530242445149226  # include/qat/data.h


def load_test_set(data_dir):
    with gzip.open(data_dir / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(data_dir / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return ((images.astype(np.float32) / 255 - MEAN) / STD).astype(np.float32), labels


def ort_runner(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_runner(path, threads):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0]


RUNTIMES = {"ONNX Runtime": ort_runner, "OpenVINO": openvino_runner}




def logits_of(run, x):
    return np.concatenate([run(x[i:i + 500]) for i in range(0, len(x), 500)])


def output_step(model_path):
    """Scale of the DequantizeLinear that produces the model output (through layout ops)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    producers = {out: node for node in model.graph.node for out in node.output}
    scales = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = producers[model.graph.output[0].name]
    while node.op_type != "DequantizeLinear":
        node = producers[node.input[0]]
    return float(scales[node.input[1]])


def agreement(logits, sim, step):
    """Strict top-1 agreement, agreement counting exact ties (some class ranked first by both), max |diff| / step."""
    firsts = lambda t: t == t.max(1, keepdims=True)
    strict = float((logits.argmax(1) == sim.argmax(1)).mean())
    ties = float((firsts(logits) & firsts(sim)).any(1).mean())
    return strict, ties, float(np.abs(logits - sim).max() / step)


def latency_ms(run, x, runs):
    """Median of `runs` timed single-image runs, in ms."""
    one = x[:1]
    for _ in range(10):
        run(one)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def throughput(run, x, batches):
    """Images/s over `batches` timed batches of 64."""
    batch = x[:64]
    run(batch)
    start = time.perf_counter()
    for _ in range(batches):
        run(batch)
    return 64 * batches / (time.perf_counter() - start)


def read_tensor(path):
    import onnx
    from onnx import numpy_helper

    proto = onnx.TensorProto()
    proto.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(proto)


def timings(make, paths, x, args):
    """Best latency and throughput of each model over args.rounds rounds. FP32 and INT8 take turns within a
    round, so that load from other processes on the machine hits both alike, and the best round is the one
    least disturbed. One session exists at a time: an idle ONNX Runtime session's spinning threads would take
    CPU from the one being timed."""
    best = {kind: {"latency": float("inf"), "throughput": 0.0} for kind in paths}
    for _ in range(args.rounds):
        for kind, path in paths.items():
            run = make(path, args.threads)
            best[kind]["latency"] = min(best[kind]["latency"], latency_ms(run, x, args.latency_runs))
            best[kind]["throughput"] = max(best[kind]["throughput"], throughput(run, x, args.batches))
            del run
    return best


def bench(export_dir, x, labels, args):
    rows, agreements = [], []
    model = export_dir.name.removeprefix("export_")
    paths = {kind: export_dir / f"model_{kind}.onnx" for kind in ("fp32", "int8")}
    sim_path = export_dir / "sim_test_logits.pb"
    sim = read_tensor(sim_path) if sim_path.exists() else None
    for runtime, make in RUNTIMES.items():
        best = timings(make, paths, x, args)
        for kind, path in paths.items():
            logits = logits_of(make(path, args.threads), x)
            rows.append({"model": model, "runtime": runtime, "kind": kind.upper(), "size": path.stat().st_size,
                         "accuracy": float((logits.argmax(1) == labels).mean()), **best[kind]})
            print(rows[-1], file=sys.stderr)
            if kind == "int8" and sim is not None:
                agreements.append((model, runtime, float((sim.argmax(1) == labels).mean()),
                                   *agreement(logits, sim, output_step(path))))
    return rows, paths["fp32"].stat().st_size / paths["int8"].stat().st_size, agreements


def table(all_rows):
    lines = ["| model | runtime | precision | file size | top-1 (10k) | latency, batch 1 | throughput, batch 64 | "
             "INT8 speed-up (batch 1 / 64) |", "|---|---|---|---|---|---|---|---|"]
    for rows, ratio, _ in all_rows:
        by_key = {(r["runtime"], r["kind"]): r for r in rows}
        for r in rows:
            fp32 = by_key[(r["runtime"], "FP32")]
            speedup = (f"{fp32['latency'] / r['latency']:.2f}x / {r['throughput'] / fp32['throughput']:.2f}x"
                       if r["kind"] == "INT8" else "")
            size = f"{r['size'] / 1e6:.3f} MB" + (f" ({ratio:.2f}x smaller)" if r["kind"] == "INT8" else "")
            lines.append(f"| {r['model']} | {r['runtime']} | {r['kind']} | {size} | {100 * r['accuracy']:.2f}% | "
                         f"{r['latency']:.3f} ms | {r['throughput']:.0f} img/s | {speedup} |")
    return "\n".join(lines)


def agreement_table(all_rows):
    lines = ["| model | runtime | sim top-1 (10k) | INT8 top-1 agreement with the sim | counting exact ties | "
             "max logit difference |", "|---|---|---|---|---|---|"]
    for _, _, agreements in all_rows:
        for model, runtime, sim_accuracy, strict, ties, steps in agreements:
            lines.append(f"| {model} | {runtime} | {100 * sim_accuracy:.2f}% | {100 * strict:.2f}% | "
                         f"{100 * ties:.2f}% | {steps:.0f} output steps |")
    return "\n".join(lines) if len(lines) > 2 else ""


def environment(threads):
    import onnxruntime
    import openvino

    cpu = "unknown CPU"
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {threads} threads; Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
            f"openvino {openvino.__version__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dirs", type=pathlib.Path, nargs="+")
    parser.add_argument("--data", type=pathlib.Path, default=pathlib.Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds; each cell is the best round")
    parser.add_argument("--latency-runs", type=int, default=100, help="timed single-image runs per round")
    parser.add_argument("--batches", type=int, default=10, help="timed batches of 64 per round")
    args = parser.parse_args()
    x, labels = load_test_set(args.data)
    results = [bench(d, x, labels, args) for d in args.export_dirs]
    print(f"{table(results)}\n\n{agreement_table(results)}\n\n{environment(args.threads)}.")


if __name__ == "__main__":
    main()
