#include "qat/zoo.h"

#include "qat/builder.h"

#include <stdexcept>

namespace qat {
namespace {

std::string conv_bn(GraphBuilder& b, const std::string& x, const std::string& name, int64_t out, int64_t kernel,
                    int64_t stride, int64_t groups = 1) {
  return b.batch_norm(b.conv(x, name + ".conv", out, kernel, stride, groups), name + ".bn");
}

// conv-bn-relu, conv-bn, plus identity or 1x1 projection shortcut, relu.
std::string basic_block(GraphBuilder& b, const std::string& x, const std::string& name, int64_t out, int64_t stride) {
  std::string y = b.relu(conv_bn(b, x, name + ".0", out, 3, stride));
  y = conv_bn(b, y, name + ".1", out, 3, 1);
  const bool project = stride != 1 || b.channels(x) != out;
  const std::string shortcut = project ? conv_bn(b, x, name + ".downsample", out, 1, stride) : x;
  return b.relu(b.add(y, shortcut));
}

std::string classifier(GraphBuilder& b, const std::string& x, int64_t num_classes) {
  return b.linear(b.flatten(b.global_avg_pool(x)), "fc", num_classes);
}

std::shared_ptr<GraphModule> resnet(const std::vector<int64_t>& widths, const std::vector<int64_t>& blocks,
                                    const ZooOptions& o) {
  GraphBuilder b(o.seed);
  std::string x = b.input("input", {-1, o.in_channels, o.image_size, o.image_size});
  x = b.relu(conv_bn(b, x, "stem", widths[0], 3, 1));
  for (size_t stage = 0; stage < widths.size(); ++stage) {
    for (int64_t i = 0; i < blocks[stage]; ++i) {
      const int64_t stride = (stage > 0 && i == 0) ? 2 : 1;
      x = basic_block(b, x, "layer" + std::to_string(stage + 1) + "." + std::to_string(i), widths[stage], stride);
    }
  }
  b.output(classifier(b, x, o.num_classes));
  return b.build();
}

int64_t scaled(int64_t channels, double width) {
  // Round to a multiple of 8, never below 8 or 90% of the target (torchvision's rule).
  const double target = static_cast<double>(channels) * width;
  int64_t rounded = std::max<int64_t>(8, static_cast<int64_t>(target + 4) / 8 * 8);
  if (static_cast<double>(rounded) < 0.9 * target) rounded += 8;
  return rounded;
}

std::string inverted_residual(GraphBuilder& b, const std::string& x, const std::string& name, int64_t out,
                              int64_t stride, int64_t expansion) {
  const int64_t in = b.channels(x);
  std::string y = x;
  if (expansion != 1) y = b.relu6(conv_bn(b, y, name + ".expand", in * expansion, 1, 1));
  y = b.relu6(conv_bn(b, y, name + ".depthwise", in * expansion, 3, stride, in * expansion));
  y = conv_bn(b, y, name + ".project", out, 1, 1);
  return (stride == 1 && in == out) ? b.add(y, x) : y;
}

std::shared_ptr<GraphModule> mobilenet_v2(double width, const ZooOptions& o) {
  // (expansion, channels, repeats, stride); torchvision's table with the
  // first two stride-2 stages set to stride 1 for 28-32 pixel inputs.
  const int64_t settings[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  GraphBuilder b(o.seed);
  std::string x = b.input("input", {-1, o.in_channels, o.image_size, o.image_size});
  x = b.relu6(conv_bn(b, x, "features.0", scaled(32, width), 3, 1));
  int index = 1;
  for (const auto& s : settings) {
    for (int64_t i = 0; i < s[2]; ++i) {
      x = inverted_residual(b, x, "features." + std::to_string(index++), scaled(s[1], width), i == 0 ? s[3] : 1, s[0]);
    }
  }
  x = b.relu6(conv_bn(b, x, "features." + std::to_string(index), scaled(1280, std::max(1.0, width)), 1, 1));
  b.output(classifier(b, x, o.num_classes));
  return b.build();
}

}  // namespace

std::vector<std::string> zoo_models() {
  return {"resnet8", "resnet20", "resnet18", "mobilenet_v2", "mobilenet_v2_x0_5"};
}

std::shared_ptr<GraphModule> make_model(const std::string& name, const ZooOptions& options) {
  if (name == "resnet8") return resnet({16, 32, 64}, {1, 1, 1}, options);
  if (name == "resnet20") return resnet({16, 32, 64}, {3, 3, 3}, options);
  if (name == "resnet18") return resnet({64, 128, 256, 512}, {2, 2, 2, 2}, options);
  if (name == "mobilenet_v2") return mobilenet_v2(1.0, options);
  if (name == "mobilenet_v2_x0_5") return mobilenet_v2(0.5, options);
  std::string known;
  for (const auto& m : zoo_models()) known += (known.empty() ? "" : ", ") + m;
  throw std::invalid_argument("unknown model '" + name + "' (known: " + known + ")");
}

}  // namespace qat
