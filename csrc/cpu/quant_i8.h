// Internal to quant_gemv.cpp: the int8 dot-product paths of quant_matmul (quant_i8.cpp).
#pragma once

#include <cstdint>

#include "cpu/quant_gemv.h"

namespace bastion::cpu::i8 {

// Whether these kernels serve `planes` (1: 8-bit activations, 2: 16-bit ones as two int8 planes) on
// `isa` (not kAuto): two planes need vpdpbusd; AVX2 keeps the int16 madd kernel for them.
bool runs(QuantIsa isa, int planes);

// quant_matmul's contract (quant_gemv.h) for 8-bit (planes 1) or 16-bit (planes 2) activations on `isa`.
void matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
            int num_threads, int planes, int64_t ldy, QuantIsa isa);

}  // namespace bastion::cpu::i8
