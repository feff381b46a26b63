// The only pybind11 translation unit: thin adapters from numpy arrays / raw pointers to the
// plain C++ of csrc/core, csrc/cpu and (optionally) kernels/cuda. No logic lives here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

// ===== BEGIN SECTION core (csrc/core) =====
static void bind_core(py::module_& m) { (void)m; }
// ===== END SECTION core =====

// ===== BEGIN SECTION cpu (csrc/cpu) =====
static void bind_cpu(py::module_& m) { (void)m; }
// ===== END SECTION cpu =====

// ===== BEGIN SECTION cuda (kernels/cuda) =====
static void bind_cuda(py::module_& m) {
#ifdef BASTION_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
// ===== END SECTION cuda =====

PYBIND11_MODULE(_core, m) {
  m.doc() = "bastion native core: scheduler, paged KV cache manager, CPU kernels";
  bind_core(m);
  bind_cpu(m);
  bind_cuda(m);
}
