// Building BastionStatus values inside the launchers (internal; not part of the C API).
#pragma once

#include <cuda_runtime_api.h>

#include "bastion_cuda.h"

namespace bastion::cuda {

inline BastionStatus ok_status() { return BastionStatus{BASTION_OK, nullptr}; }

// `message` NULL means the arguments are fine.
inline BastionStatus argument_status(const char* message) {
  return message == nullptr ? ok_status() : BastionStatus{BASTION_INVALID_ARGUMENT, message};
}

inline BastionStatus cuda_status(cudaError_t err) {
  return err == cudaSuccess ? ok_status() : BastionStatus{BASTION_CUDA_ERROR, cudaGetErrorString(err)};
}

}  // namespace bastion::cuda
