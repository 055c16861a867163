#include "graph/ops.h"

namespace qat::ops {

void add_nn_ops(KernelMap& kernels) { (void)kernels; }

}  // namespace qat::ops
