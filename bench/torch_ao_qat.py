#!/usr/bin/python3
"""torch.ao eager-mode QAT, the peer that bench/qat_step.cpp is compared with.

Run with Debian's interpreter (python3-torch 1.13, python3-torchvision 0.14,
numpy), not the project's .venv, so that both sides use the same LibTorch
build (Debian's libtorch_cpu.so, OpenMP, oneDNN):

    /usr/bin/python3 bench/torch_ao_qat.py                 # step times
    /usr/bin/python3 bench/torch_ao_qat.py --train --models resnet20 \\
        --fp32-epochs 12 --qat-epochs 2                    # accuracy run
    /usr/bin/python3 bench/torch_ao_qat.py --train --models resnet20 \\
        --fp32-checkpoint runs/fp32/checkpoint.pt --qat-epochs 1   # from qat's FP32 weights

The accuracy run trains FP32 on Fashion-MNIST as `qat train` does (same
normalisation, 2 px pad-and-crop plus flip, SGD momentum 0.9, weight decay
5e-4, cosine lr per epoch, batch 128), then QATs a copy for each quantized
variant (calibrated on 16 batches, as `qat qat`), and prints FP32, PTQ and
QAT top-1 on the 10k test images. --w-bits/--a-bits narrow the grids
(int4 weights: [-8, 7] per channel; 4-bit activations: [0, 15]), with the
fbgemm recipe's observers but without its 7-bit reduce_range.

Models are the qat zoo's, rebuilt in PyTorch: resnet20 (src/zoo/zoo.cpp:
3x3 stem of 16 + BN + ReLU, 3 stages of 16/32/64 channels x 3 BasicBlocks,
1x1 conv + BN projection when the shape changes, global average pool,
Linear) and resnet18 (torchvision's, with a 3x3 stride-1 stem for one input
channel and no max-pool). Both use torchvision's QuantizableBasicBlock, so
conv-bn-relu, conv-bn and the projection are fused for QAT (simulated BN
folding, as qat's BatchNormMode::kSimulate) and the residual add-relu gets
one quantizer, as qat's Add+Relu supergroup. mobilenet_v2 and
mobilenet_v2_x0_5 are the zoo's MobileNetV2 (ReLU6, stride-1 stem and
first stages): conv-bn pairs are fused; ReLU6 cannot be fused in eager
mode, so the conv-bn before it gets an Identity output quantizer and only
the ReLU6 output is fake-quantized, as in qat (64 activation fake-quants
per step in both, qat's 66 counting its global-average-pool output and
the classifier weight's own node).

Variants, as in qat_step:
  fp32    the float model, train mode
  qat     get_default_qat_qconfig('fbgemm'): per-channel symmetric int8
          weights, uint8 activations, moving-average observers fused into
          the fake-quant op (they keep observing while training)
  qat_lsq range learning: _LearnableFakeQuantize (LSQ with gradient
          scaling) for weights and activations, observers off after
          calibration; the peer of qat_step's qat_rl
Before QAT every variant is calibrated on 2 batches (observers only), after
qat_step's BN warm-up (running statistics from one batch).
Debian's torch has no fbgemm engine (qnnpack and onednn only); the fbgemm
qconfig is only a fake-quant recipe, which needs no engine until convert().
"""

import argparse
import gzip
import math
import os
import re
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.ao.quantization as tq
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torchvision.models.quantization import resnet as qresnet

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# include/qat/data.h: population statistics of the training split.
MEAN = 0.2860405969887955
STD = 0.3530242445149226
LR = 1e-3
ENCODING_LR = 1e-5  # qat_step's: untrained models' scale gradients are large


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load_split(split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(FASHION_MNIST, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FASHION_MNIST, prefix + "-labels-idx1-ubyte.gz"))
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def normalize(pixels):
    return (pixels.float() / 255.0 - MEAN) / STD


def augment(pixels, generator):
    """qat's training augmentation on uint8 pixels: 2 px zero padding, a
    random 28x28 crop, and a left-right flip with probability 1/2."""
    n, _, h, w = pixels.shape
    padded = F.pad(pixels, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (n,), generator=generator)
    dx = torch.randint(0, 5, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(pixels)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def init_weights(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet20(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks, inplanes = [], 16
        for stage, planes in enumerate((16, 32, 64)):
            for i in range(3):
                stride = 2 if stage > 0 and i == 0 else 1
                downsample = None
                if stride != 1 or inplanes != planes:
                    downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                               nn.BatchNorm2d(planes))
                blocks.append(qresnet.QuantizableBasicBlock(inplanes, planes, stride, downsample))
                inplanes = planes
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        self.dequant = tq.DeQuantStub()
        init_weights(self)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.quant(x))))
        x = self.avgpool(self.layers(x)).flatten(1)
        return self.dequant(self.fc(x))

    def fuse_model(self, is_qat=None):
        fuse = tq.fuse_modules_qat if is_qat else tq.fuse_modules
        fuse(self, ["conv1", "bn1", "relu"], inplace=True)
        for block in self.layers:
            block.fuse_model(is_qat)


def resnet18():
    model = qresnet.resnet18(weights=None, quantize=False, num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    init_weights(model)
    return model


def scaled(channels, width):
    """src/zoo/zoo.cpp's channel rounding (torchvision's): a multiple of 8,
    never below 8 or 90% of the target."""
    target = channels * width
    rounded = max(8, int(target + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * target else rounded


class ConvBnReLU6(nn.Sequential):
    """conv-bn-relu6 as one supergroup, as qat places quantizers: eager-mode
    torch.ao cannot fuse ReLU6, so after fusing conv-bn the pair's own
    output quantizer is an Identity (see relu6_groups_unobserved) and only
    the ReLU6 output is fake-quantized."""

    def __init__(self, cin, cout, kernel, stride, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())

    def fuse(self, is_qat):
        (tq.fuse_modules_qat if is_qat else tq.fuse_modules)(self, ["0", "1"], inplace=True)


class ConvBn(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout))

    def fuse(self, is_qat):
        (tq.fuse_modules_qat if is_qat else tq.fuse_modules)(self, ["0", "1"], inplace=True)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        layers = [ConvBnReLU6(cin, hidden, 1, 1)] if expansion != 1 else []
        layers += [ConvBnReLU6(hidden, hidden, 3, stride, groups=hidden), ConvBn(hidden, cout)]
        self.conv = nn.Sequential(*layers)
        # The residual add and its output quantizer, where the block has one.
        self.skip_add = nn.quantized.FloatFunctional() if stride == 1 and cin == cout else None

    def forward(self, x):
        y = self.conv(x)
        return self.skip_add.add(y, x) if self.skip_add is not None else y


class MobileNetV2(nn.Module):
    """src/zoo/zoo.cpp's mobilenet_v2: torchvision's table with the first two
    stride-2 stages at stride 1 for 28x28 inputs, ReLU6, 3x3 stride-1 stem."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self, width=1.0, num_classes=10):
        super().__init__()
        self.quant = tq.QuantStub()
        cin = scaled(32, width)
        layers = [ConvBnReLU6(1, cin, 3, 1)]
        for expansion, channels, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                cout = scaled(channels, width)
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        last = scaled(1280, max(1.0, width))
        layers.append(ConvBnReLU6(cin, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)
        self.dequant = tq.DeQuantStub()
        init_weights(self)

    def forward(self, x):
        x = self.avgpool(self.features(self.quant(x))).flatten(1)
        return self.dequant(self.fc(x))

    def fuse_model(self, is_qat=None):
        for m in self.modules():
            if isinstance(m, (ConvBnReLU6, ConvBn)):
                m.fuse(is_qat)


def relu6_groups_unobserved(model):
    """The fused conv-bn inside each ConvBnReLU6 keeps its weight fake-quant
    but gets an Identity output quantizer (qat quantizes only the ReLU6)."""
    for m in model.modules():
        if isinstance(m, ConvBnReLU6) and hasattr(m[0], "activation_post_process"):
            m[0].activation_post_process = nn.Identity()


MODELS = {"resnet20": ResNet20, "resnet18": resnet18, "mobilenet_v2": lambda: MobileNetV2(1.0),
          "mobilenet_v2_x0_5": lambda: MobileNetV2(0.5)}


def lsq_qconfig(channels, w_bits=8, a_bits=8):
    act = _LearnableFakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0,
                                           quant_max=2 ** a_bits - 1, dtype=torch.quint8,
                                           qscheme=torch.per_tensor_affine, use_grad_scaling=True)
    weight = _LearnableFakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver,
                                              quant_min=-2 ** (w_bits - 1), quant_max=2 ** (w_bits - 1) - 1,
                                              dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
                                              channel_len=channels, use_grad_scaling=True)
    return tq.QConfig(activation=act, weight=weight)


def low_bit_qat_qconfig(w_bits, a_bits):
    """The fbgemm QAT recipe (moving-average observers inside the fake-quant
    ops, per-channel symmetric weights, asymmetric activations) on narrower
    grids; the activations use the whole grid (no reduce_range)."""
    act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=2 ** a_bits - 1,
                                    dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = tq.FakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver,
                                       quant_min=-2 ** (w_bits - 1), quant_max=2 ** (w_bits - 1) - 1,
                                       dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return tq.QConfig(activation=act, weight=weight)


def set_batchnorm_statistics(model, images):
    """qat_step's warm-up: an untrained model's running statistics (0, 1)
    would give eval-mode calibration ranges unrelated to training's, so
    they are set to one batch's."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(images)
    for m in norms:
        m.momentum = 0.1


def make_model(name, variant, calibration, state=None, bits=(8, 8)):
    """A model in train mode for `variant` (from `state`, a trained float
    model's state_dict, when given), calibrated when quantized, and the
    tensors that are encodings (their own optimizer group). `bits` are the
    weight and activation bitwidths; (8, 8) keeps the fbgemm qconfig."""
    torch.manual_seed(0)
    model = MODELS[name]()
    if state is not None:
        model.load_state_dict(state)
    elif calibration:
        set_batchnorm_statistics(model, calibration[0][0])
    model.train()
    if variant == "fp32":
        return model, []
    model.fuse_model(is_qat=True)
    if variant == "qat":
        model.qconfig = tq.get_default_qat_qconfig("fbgemm") if bits == (8, 8) else low_bit_qat_qconfig(*bits)
    elif variant == "qat_lsq":
        # Per-channel learnable scales need their channel count up front.
        model.qconfig = lsq_qconfig(1, *bits)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.qconfig = lsq_qconfig(m.out_features, *bits)
            elif isinstance(m, nn.Conv2d):
                m.qconfig = lsq_qconfig(m.out_channels, *bits)
            elif isinstance(m, nn.Sequential) and len(m) and isinstance(m[0], nn.Conv2d):
                m.qconfig = lsq_qconfig(m[0].out_channels, *bits)  # a fused conv-bn(-relu)
    else:
        raise ValueError("unknown variant " + variant)
    tq.prepare_qat(model, inplace=True)
    relu6_groups_unobserved(model)
    model.eval()
    model.apply(tq.disable_fake_quant)
    with torch.no_grad():
        for images, _ in calibration:
            model(images)
    model.apply(tq.enable_fake_quant)
    model.train()
    encodings = []
    if variant == "qat_lsq":
        for m in model.modules():
            if isinstance(m, _LearnableFakeQuantize):
                m.enable_param_learning()
                encodings += [m.scale, m.zero_point]
    return model, encodings


def qat_checkpoint_state(path, model):
    """The state_dict of `model` filled from a `qat train` checkpoint (a
    TorchScript archive: tensors t<i>, their names in `names`). The zoo
    builds layers in torchvision's order (conv1, bn1, conv2, bn2,
    downsample), so tensors pair up by position; shapes are checked.
    MobileNetV2's ReLU6 bounds (Clip_<i>_min/max, constants 0 and 6 in the
    graph) have no torch counterpart and are skipped."""
    archive = torch.jit.load(path).model
    ours = [(name, getattr(archive, "t%d" % i)) for i, name in enumerate(archive.names)
            if not re.fullmatch(r"Clip_\d+_(min|max)", name)]
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(keys) != len(ours):
        raise SystemExit("%s: %d tensors, the torch model has %d" % (path, len(ours), len(keys)))
    state = model.state_dict()
    for key, (name, tensor) in zip(keys, ours):
        if state[key].shape != tensor.shape:
            raise SystemExit("%s: %s %s does not fit %s %s" % (path, name, tuple(tensor.shape), key,
                                                                tuple(state[key].shape)))
        state[key] = tensor.clone()
    return state


def make_optimizer(model, encodings, lr, encoding_lr, weight_decay=5e-4):
    ids = {id(e) for e in encodings}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": weights}]
    if encodings:
        groups.append({"params": encodings, "lr": encoding_lr, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)


class Runner:
    def __init__(self, name, variant, calibration, train):
        self.variant = variant
        self.model, encodings = make_model(name, variant, calibration)
        self.optimizer = make_optimizer(self.model, encodings, LR, ENCODING_LR)
        self.train = train
        self.next = 0

    def step(self):
        images, labels = self.train[self.next % len(self.train)]
        self.next += 1
        self.optimizer.zero_grad()
        self.loss = F.cross_entropy(self.model(images), labels)
        self.loss.backward()
        self.optimizer.step()


def fixed_batches(batch, calibration_batches, train_batches=8):
    """qat_step's data: Fashion-MNIST test split, unshuffled, unaugmented."""
    images, labels = load_split("test")
    batches = [(normalize(images[i * batch:(i + 1) * batch]), labels[i * batch:(i + 1) * batch])
               for i in range(calibration_batches + train_batches)]
    return batches[:calibration_batches], batches[calibration_batches:]


def ratio_cell(ratios):
    return "%.2f (%.2f-%.2f)" % (statistics.median(ratios), min(ratios), max(ratios))


def measure_steps(args):
    calibration, train = fixed_batches(args.batch, args.calibration_batches)
    titles = {"fp32": "FP32", "qat": "QAT (fbgemm qconfig)", "qat_lsq": "QAT+LSQ"}
    rows = []
    for name in args.models:
        runners = [Runner(name, v, calibration, train) for v in args.variants]
        for r in runners:
            for _ in range(args.warmup):
                r.step()
        ms = {v: [] for v in args.variants}
        ratios = {v: [] for v in args.variants}
        for round_index in range(args.rounds):
            times = {}
            for k in range(len(runners)):
                r = runners[(k + round_index) % len(runners)]
                start = time.perf_counter()
                for _ in range(args.steps):
                    r.step()
                times[r.variant] = 1e3 * (time.perf_counter() - start) / args.steps
            for v, t in times.items():
                ms[v].append(t)
                if "fp32" in times:
                    ratios[v].append(t / times["fp32"])
            print("%s round %d/%d done" % (name, round_index + 1, args.rounds), flush=True)
        for r in runners:
            if not math.isfinite(r.loss.item()):
                raise RuntimeError(r.variant + ": loss is not finite")
        rows.append((name, ms, ratios))
    print("\ntorch.ao step time, ms/step: median over %d rounds of %d steps (batch %d, %d threads); ratios: "
          "median (min-max) of per-round ratios to FP32\n" % (args.rounds, args.steps, args.batch, args.threads))
    quantized = [v for v in args.variants if v != "fp32"]
    print("| model | " + " | ".join(titles[v] + " ms" for v in args.variants) + " | " +
          " | ".join(titles[v] + " / FP32" for v in quantized) + " |")
    print("|---|" + "---|" * (len(args.variants) + len(quantized)))
    for name, ms, ratios in rows:
        print("| %s | " % name + " | ".join("%.1f" % statistics.median(ms[v]) for v in args.variants) + " | " +
              " | ".join(ratio_cell(ratios[v]) if ratios[v] else "-" for v in quantized) + " |")


def cosine_lr(lr, epoch, epochs):
    """qat's scheduled_lr for "cosine": set once per epoch."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def evaluate(model, images, labels, batch=1000):
    """Top-1 in eval mode. torch.ao's observers keep observing in eval mode,
    which would move the encodings on test data: they pause meanwhile."""
    was_training = model.training
    observing = [m for m in model.modules() if isinstance(m, tq.FakeQuantizeBase) and m.observer_enabled[0] == 1]
    for m in observing:
        m.disable_observer()
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            logits = model(normalize(images[i:i + batch]))
            correct += (logits.argmax(1) == labels[i:i + batch]).sum().item()
    model.train(was_training)
    for m in observing:
        m.enable_observer()
    return correct / len(labels)


def train_epochs(model, optimizer, epochs, base_lrs, data, test, seed, label):
    images, labels = data
    generator = torch.Generator().manual_seed(seed)
    accuracy = None
    for epoch in range(epochs):
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = cosine_lr(base, epoch, epochs)
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        start, loss_sum, seen = time.time(), 0.0, 0
        for i in range(0, len(labels) - 127, 128):  # drop_last, as qat's training loader
            index = order[i:i + 128]
            batch = normalize(augment(images[index], generator))
            optimizer.zero_grad()
            loss = F.cross_entropy(model(batch), labels[index])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            seen += len(index)
        accuracy = evaluate(model, *test)
        print("%s epoch %d/%d: lr %.4g loss %.4f test %.2f%% (%.0f s)" %
              (label, epoch + 1, epochs, optimizer.param_groups[0]["lr"], loss_sum / seen, 100 * accuracy,
               time.time() - start), flush=True)
    return accuracy if accuracy is not None else evaluate(model, *test)


def accuracy_run(args):
    """FP32 training, then QAT from those weights: a peer row for
    bench/results/qat.md (qat's `qat train`, then `qat qat`)."""
    name = args.models[0]
    train, test = load_split("train"), load_split("test")
    model, _ = make_model(name, "fp32", [])
    if args.fp32_checkpoint:
        model.load_state_dict(qat_checkpoint_state(args.fp32_checkpoint, model))
        results = {"FP32": evaluate(model, *test)}
    else:
        optimizer = make_optimizer(model, [], args.lr, 0.0)
        results = {"FP32": train_epochs(model, optimizer, args.fp32_epochs, [args.lr], train, test, args.seed,
                                        "fp32")}
    print("FP32 %.2f%%" % (100 * results["FP32"]), flush=True)
    state = model.state_dict()
    # qat's calibration set: the first batches of the unshuffled training split.
    calibration = [(normalize(train[0][i * 128:(i + 1) * 128]), None) for i in range(args.calibration_batches)]
    for variant in [v for v in args.variants if v != "fp32"]:
        quantized, encodings = make_model(name, variant, calibration, state, (args.w_bits, args.a_bits))
        results[variant + " PTQ"] = evaluate(quantized, *test)
        optimizer = make_optimizer(quantized, encodings, args.qat_lr, args.encoding_lr, args.qat_weight_decay)
        results[variant] = train_epochs(quantized, optimizer, args.qat_epochs, [args.qat_lr, args.encoding_lr],
                                        train, test, args.seed + 1, variant)
    print("\n| model | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    print("| %s | " % name + " | ".join("%.2f%%" % (100 * a) for a in results.values()) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet20", help="comma-separated: resnet20, resnet18, mobilenet_v2, mobilenet_v2_x0_5")
    parser.add_argument("--variants", default="fp32,qat,qat_lsq", help="comma-separated: fp32, qat, qat_lsq")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calibration-batches", type=int, help="default: 2 (steps), 16 (--train, as qat's CLI)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="accuracy run on Fashion-MNIST instead")
    parser.add_argument("--fp32-epochs", type=int, default=12)
    parser.add_argument("--fp32-checkpoint", help="--train: start from a `qat train` checkpoint instead of training")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--qat-lr", type=float, default=1e-3)
    parser.add_argument("--encoding-lr", type=float, default=1e-3, help="qat_lsq's encodings, --train only")
    parser.add_argument("--qat-weight-decay", type=float, default=5e-4, help="--train: QAT's weight decay")
    parser.add_argument("--w-bits", type=int, default=8, help="--train: weight bitwidth (2-8)")
    parser.add_argument("--a-bits", type=int, default=8, help="--train: activation bitwidth (2-8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.variants = args.variants.split(",")
    if args.calibration_batches is None:
        args.calibration_batches = 16 if args.train else 2
    torch.set_num_threads(args.threads)
    if args.train:
        accuracy_run(args)
    else:
        measure_steps(args)


if __name__ == "__main__":
    main()
