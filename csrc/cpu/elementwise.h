// Row-wise fp32 kernels: RMSNorm (optionally fused with the residual add) and SiLU-and-mul.
// Fusing saves torch's intermediate tensors: each row is read and written once.
#pragma once

#include <cstdint>

namespace bastion::cpu {

// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight. With residual_in != nullptr, h = x[r] +
// residual_in[r] is normalised instead and stored in residual_out[r] (which may alias residual_in).
// Rows are contiguous.
void rms_norm(const float* x, const float* weight, const float* residual_in, float* residual_out, float* out,
              int64_t rows, int hidden, float eps, int num_threads);

// out[r, i] = silu(x[r, i]) * x[r, d + i] for x [rows, 2d] and out [rows, d], both contiguous.
void silu_and_mul(const float* x, float* out, int64_t rows, int d, int num_threads);

}  // namespace bastion::cpu
