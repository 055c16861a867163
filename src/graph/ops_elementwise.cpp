#include "graph/ops.h"

namespace qat::ops {

void add_elementwise_ops(KernelMap& kernels) { (void)kernels; }

}  // namespace qat::ops
