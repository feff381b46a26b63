// pybind11 bindings of bastion._core, one translation unit per area: thin adapters from numpy
// arrays / raw pointers to the plain C++ of csrc/core, csrc/cpu and (optionally) csrc/cuda.
// No logic lives in the bindings.
#pragma once

#include <pybind11/pybind11.h>

namespace bastion_bindings {

void bind_core(pybind11::module_& m);  // scheduler + KV manager (csrc/core)
void bind_cpu(pybind11::module_& m);   // fp32 CPU kernels and the decoder program (csrc/cpu)
void bind_cuda(pybind11::module_& m);  // CUDA kernels when built with them (csrc/cuda)

}  // namespace bastion_bindings
