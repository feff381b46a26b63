// The whole Llama decoder for small CPU steps as one call: every layer's RMSNorm, quantized
// QKV/O/gate-up/down projections, neox rotary, KV write, paged attention and SiLU-and-mul, in C++.
// Single-stream decode on the Python path spent ~40 % of each token in per-op overhead (about ten
// Python -> C++ calls per layer); here one call runs the same kernels back to back.
// The program holds raw pointers only: the caller keeps weights and caches alive and in place.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/quant_gemv.h"

namespace bastion::cpu {

// Consecutive output rows of a linear stored as GGUF blocks of one type.
struct QuantPart {
  const uint8_t* blocks = nullptr;
  QuantType type = QuantType::kQ8_0;
  int64_t rows = 0;
};

// A linear layer y = x @ W^T (+ bias), W [rows, cols], as up to three parts stacked along the
// rows: a fused projection (QKV, gate/up) keeps each source tensor's own type (Q4_K_M files store
// attn_v and some ffn_down in Q6_K beside Q4_K).
struct QuantLinear {
  static constexpr int kMaxParts = 3;
  QuantPart parts[kMaxParts];
  int num_parts = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* bias = nullptr;  // [rows] or nullptr
};

struct DecoderLayerWeights {
  const float* input_norm = nullptr;  // [hidden]
  const float* post_norm = nullptr;   // [hidden]
  QuantLinear qkv;                    // [(heads + 2 kv heads) * head_dim, hidden], q/k un-permuted
  QuantLinear o;                      // [hidden, heads * head_dim]
  QuantLinear gate_up;                // [2 * intermediate, hidden]
  QuantLinear down;                   // [hidden, intermediate]
  void* k_cache = nullptr;            // [num_blocks, block_size, kv heads, head_dim], contiguous, fp32 or fp16
  void* v_cache = nullptr;
};

struct DecoderShape {
  int hidden = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int intermediate = 0;
  int rotary_half = 0;  // neox pairs (i, i + rotary_half); dims past 2 * rotary_half are not rotated
  int block_size = 0;
  int64_t num_blocks = 0;
  float eps = 0.0f;
  float scale = 0.0f;
  int sliding_window = 0;  // <= 0: unlimited
  bool kv_fp16 = false;    // the K/V caches hold fp16 (else fp32)
};

// One scheduler step (a flat varlen batch); every array is contiguous.
struct DecoderStep {
  int64_t num_tokens = 0;
  const float* cos = nullptr;  // [num_tokens, rotary_half] for each token's position
  const float* sin = nullptr;
  const int64_t* slot_mapping = nullptr;  // [num_tokens]
  const int32_t* block_table = nullptr;   // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  const int32_t* seq_lens = nullptr;      // [num_seqs]
  const int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1]
  int num_seqs = 0;
};

class DecoderProgram {
 public:
  DecoderProgram(const DecoderShape& shape, const float* final_norm, ActivationBits activation_bits);

  // Layers run in the order they were added; throws std::invalid_argument on mismatched shapes.
  void add_layer(const DecoderLayerWeights& layer);

  // Floats of scratch a step of `num_tokens` tokens needs (see `run`).
  int64_t scratch_floats(int64_t num_tokens) const;

  // hidden [num_tokens, hidden] holds the token embeddings on entry and the final-normed hidden
  // states on exit; `scratch` has scratch_floats(num_tokens) floats. Writes this step's K/V.
  void run(const DecoderStep& step, float* hidden, float* scratch, int num_threads) const;

  int num_layers() const { return static_cast<int>(layers_.size()); }

 private:
  void attention(const DecoderLayerWeights& layer, const DecoderStep& step, float* qkv, float* out,
                 int num_threads) const;
  void project(const QuantLinear& linear, const float* x, float* y, int64_t rows, int num_threads) const;

  DecoderShape shape_;
  const float* final_norm_;
  ActivationBits activation_bits_;
  std::vector<DecoderLayerWeights> layers_;
};

}  // namespace bastion::cpu
