// The int8 dot-product paths of quant_matmul (8-bit activations, and 16-bit ones as two int8 planes on
// VNNI CPUs), compiled three times from quant_i8_kernel.inc: AVX-512 VNNI, AVX-VNNI and AVX2. The
// library builds with -mavx2 only; the VNNI copies are compiled under `#pragma GCC target` (each
// function in their region carries the target, nothing else does) and run only after the CPU was
// checked (__builtin_cpu_supports, which also checks that the OS saves the zmm registers).
#include "cpu/quant_i8.h"

// GCC 12's AVX-512 headers self-initialize their "undefined" pass-through vectors (`__m512i __Y = __Y`),
// which -W(maybe-)uninitialized reports wherever such an intrinsic is inlined (GCC bug 105593, fixed in
// 13). The state at the header's own lines is what counts, so this precedes its (first) inclusion.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/quant_blocks.h"

namespace bastion::cpu {

namespace i8_avx2 {
#define BASTION_I8_WIDTH 256
#define BASTION_I8_VNNI 0
#include "cpu/quant_i8_kernel.inc"
#undef BASTION_I8_WIDTH
#undef BASTION_I8_VNNI
}  // namespace i8_avx2

#pragma GCC push_options
#pragma GCC target("avxvnni")
namespace i8_avxvnni {
#define BASTION_I8_WIDTH 256
#define BASTION_I8_VNNI 1
#include "cpu/quant_i8_kernel.inc"
#undef BASTION_I8_WIDTH
#undef BASTION_I8_VNNI
}  // namespace i8_avxvnni
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
namespace i8_avx512 {
#define BASTION_I8_WIDTH 512
#define BASTION_I8_VNNI 1
#include "cpu/quant_i8_kernel.inc"
#undef BASTION_I8_WIDTH
#undef BASTION_I8_VNNI
}  // namespace i8_avx512
#pragma GCC pop_options

bool quant_isa_supported(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kAuto: return true;
    case QuantIsa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case QuantIsa::kAvxVnni: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    case QuantIsa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

namespace {

// BASTION_QUANT_ISA if set to a name this CPU runs, else the detected one.
QuantIsa default_isa() {
  static const QuantIsa isa = [] {
    const char* env = std::getenv("BASTION_QUANT_ISA");
    QuantIsa chosen;
    if (env != nullptr && parse_quant_isa(env, chosen) && chosen != QuantIsa::kAuto && quant_isa_supported(chosen)) {
      return chosen;
    }
    return detected_quant_isa();
  }();
  return isa;
}

std::atomic<int> forced_isa{static_cast<int>(QuantIsa::kAuto)};

}  // namespace

QuantIsa detected_quant_isa() {
  static const QuantIsa isa = quant_isa_supported(QuantIsa::kAvx512Vnni) ? QuantIsa::kAvx512Vnni
                              : quant_isa_supported(QuantIsa::kAvxVnni)  ? QuantIsa::kAvxVnni
                                                                          : QuantIsa::kAvx2;
  return isa;
}

QuantIsa active_quant_isa() {
  const auto forced = static_cast<QuantIsa>(forced_isa.load(std::memory_order_relaxed));
  return forced == QuantIsa::kAuto ? default_isa() : forced;
}

bool set_quant_isa(QuantIsa isa) {
  if (!quant_isa_supported(isa)) return false;
  forced_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

const char* quant_isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kAuto: return "auto";
    case QuantIsa::kAvx2: return "avx2";
    case QuantIsa::kAvxVnni: return "avxvnni";
    case QuantIsa::kAvx512Vnni: return "avx512vnni";
  }
  return "?";
}

bool parse_quant_isa(const char* name, QuantIsa& isa) {
  for (QuantIsa candidate : {QuantIsa::kAuto, QuantIsa::kAvx2, QuantIsa::kAvxVnni, QuantIsa::kAvx512Vnni}) {
    if (std::strcmp(name, quant_isa_name(candidate)) == 0) {
      isa = candidate;
      return true;
    }
  }
  return false;
}

namespace i8 {

bool runs(QuantIsa isa, int planes) { return planes == 1 || isa != QuantIsa::kAvx2; }

void matmul(const float* x, const uint8_t* w, float* y, int64_t M, int64_t N, int64_t K, QuantType type,
            int num_threads, int planes, int64_t ldy, QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kAvx512Vnni:
      if (planes == 2) {
        i8_avx512::dispatch<2>(x, w, y, M, N, K, type, num_threads, ldy);
      } else {
        i8_avx512::dispatch<1>(x, w, y, M, N, K, type, num_threads, ldy);
      }
      return;
    case QuantIsa::kAvxVnni:
      if (planes == 2) {
        i8_avxvnni::dispatch<2>(x, w, y, M, N, K, type, num_threads, ldy);
      } else {
        i8_avxvnni::dispatch<1>(x, w, y, M, N, K, type, num_threads, ldy);
      }
      return;
    case QuantIsa::kAuto:
    case QuantIsa::kAvx2: i8_avx2::dispatch<1>(x, w, y, M, N, K, type, num_threads, ldy); return;
  }
}

}  // namespace i8

}  // namespace bastion::cpu
