// The bastion._core module: one submodule or group of functions per area (see bindings.h).
#include "bindings/bindings.h"


PYBIND11_MODULE(_core, m) {
  m.doc() = "bastion native core: scheduler, paged KV cache manager, CPU kernels";
  bastion_bindings::bind_core(m);
  bastion_bindings::bind_cpu(m);
  bastion_bindings::bind_cuda(m);
}
