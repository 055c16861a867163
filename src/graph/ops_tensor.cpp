#include "graph/ops.h"

namespace qat::ops {

void add_tensor_ops(KernelMap& kernels) { (void)kernels; }

}  // namespace qat::ops
