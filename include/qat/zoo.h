// The model zoo: classification networks sized for small images (28x28
// Fashion-MNIST, 32x32 CIFAR-10), built with GraphBuilder.
#pragma once

#include "qat/graph.h"

#include <memory>
#include <string>
#include <vector>

namespace qat {

struct ZooOptions {
  int64_t in_channels = 1;
  int64_t num_classes = 10;
  int64_t image_size = 28;
  uint64_t seed = 0;
};

// Names: resnet8, resnet20 (He et al.'s CIFAR ResNets: 3 stages of 16/32/64
// channels, 1 or 3 basic blocks each), resnet18 (torchvision's layout with
// a 3x3 stride-1 stem and no max-pool, for small images), mobilenet_v2 and
// mobilenet_v2_x0_5 (inverted residuals with ReLU6; the first two stride-2
// stages are stride 1 for small images). Unknown names throw, listing the
// known ones.
std::shared_ptr<GraphModule> make_model(const std::string& name, const ZooOptions& options = {});
std::vector<std::string> zoo_models();

}  // namespace qat
