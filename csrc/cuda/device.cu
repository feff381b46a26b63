// Device discovery. With static cudart and no driver/GPU, cudaGetDeviceCount returns an error code
// (it does not abort), which is reported here as zero devices.
#include <cuda_runtime_api.h>

#include "bastion_cuda.h"

extern "C" int bastion_cuda_device_count(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it so later calls do not see a stale error
    return 0;
  }
  return count;
}
