#include "cpu/decoder_program.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/cache_write.h"
#include "cpu/elementwise.h"
#include "cpu/paged_attention.h"

namespace bastion::cpu {

namespace {

// Widths of the query and of one of K/V in a layer's QKV row.
int64_t q_size(const DecoderShape& s) { return static_cast<int64_t>(s.num_heads) * s.head_dim; }
int64_t kv_size(const DecoderShape& s) { return static_cast<int64_t>(s.num_kv_heads) * s.head_dim; }

void check_linear(const char* name, const QuantLinear& linear, int64_t rows, int64_t cols) {
  int64_t total = 0;
  bool parts_ok = linear.num_parts >= 1 && linear.num_parts <= QuantLinear::kMaxParts;
  for (int i = 0; parts_ok && i < linear.num_parts; ++i) {
    const QuantPart& part = linear.parts[i];
    const int values = quant_block_values(part.type);
    parts_ok = part.blocks != nullptr && part.rows > 0 && values > 0 && cols % values == 0;
    total += part.rows;
  }
  if (!parts_ok || total != rows || linear.rows != rows || linear.cols != cols) {
    throw std::invalid_argument(std::string("decoder program: ") + name + " must be " + std::to_string(rows) + " x " +
                                std::to_string(cols) + " in 1-3 parts of GGUF blocks of a supported type, got " +
                                std::to_string(linear.rows) + " x " + std::to_string(linear.cols));
  }
}

// Neox rotary of every q and k head of each token's QKV row, in place.
void rotate_neox(float* qkv, int64_t row_stride, int64_t tokens, int heads, int head_dim, const float* cos,
                 const float* sin, int half) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int h = 0; h < heads; ++h) {
      float* x = qkv + t * row_stride + static_cast<int64_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

}  // namespace

DecoderProgram::DecoderProgram(const DecoderShape& shape, const float* final_norm, ActivationBits activation_bits)
    : shape_(shape), final_norm_(final_norm), activation_bits_(activation_bits) {
  const DecoderShape& s = shape;
  if (s.hidden <= 0 || s.num_heads <= 0 || s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0 ||
      s.head_dim <= 0 || s.intermediate <= 0 || s.block_size <= 0 || s.num_blocks <= 0 || s.rotary_half <= 0 ||
      2 * s.rotary_half > s.head_dim || final_norm == nullptr) {
    throw std::invalid_argument("decoder program: inconsistent model shape");
  }
}

void DecoderProgram::add_layer(const DecoderLayerWeights& layer) {
  const DecoderShape& s = shape_;
  const int64_t q = q_size(s), kv = kv_size(s);
  check_linear("qkv", layer.qkv, q + 2 * kv, s.hidden);
  check_linear("o", layer.o, s.hidden, q);
  check_linear("gate_up", layer.gate_up, 2 * static_cast<int64_t>(s.intermediate), s.hidden);
  check_linear("down", layer.down, s.hidden, s.intermediate);
  if (layer.input_norm == nullptr || layer.post_norm == nullptr || layer.k_cache == nullptr ||
      layer.v_cache == nullptr || layer.o.bias != nullptr || layer.gate_up.bias != nullptr ||
      layer.down.bias != nullptr) {
    throw std::invalid_argument("decoder program: a layer lacks norms or caches, or has a bias only qkv may have");
  }
  layers_.push_back(layer);
}

int64_t DecoderProgram::scratch_floats(int64_t num_tokens) const {
  const DecoderShape& s = shape_;
  const int64_t q = q_size(s), kv = kv_size(s);
  // residual, normed x, qkv, attention output, gate/up, activation
  return num_tokens * (2 * s.hidden + (q + 2 * kv) + q + 3 * static_cast<int64_t>(s.intermediate));
}

void DecoderProgram::project(const QuantLinear& linear, const float* x, float* y, int64_t rows,
                             int num_threads) const {
  int64_t first_row = 0;
  for (int i = 0; i < linear.num_parts; ++i) {  // each part fills its column range of y
    const QuantPart& part = linear.parts[i];
    quant_matmul(x, part.blocks, y + first_row, rows, part.rows, linear.cols, part.type, num_threads,
                 activation_bits_, linear.rows);
    first_row += part.rows;
  }
  if (linear.bias == nullptr) return;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < linear.rows; ++i) y[r * linear.rows + i] += linear.bias[i];
  }
}

void DecoderProgram::attention(const DecoderLayerWeights& layer, const DecoderStep& step, float* qkv, float* out,
                               int num_threads) const {
  const DecoderShape& s = shape_;
  const int64_t q = q_size(s), kv = kv_size(s);
  const int64_t row = q + 2 * kv;
  rotate_neox(qkv, row, step.num_tokens, s.num_heads + s.num_kv_heads, s.head_dim, step.cos, step.sin, s.rotary_half);
  const int64_t slot = static_cast<int64_t>(s.num_kv_heads) * s.head_dim;  // cache strides of a contiguous cache
  const int64_t block = slot * s.block_size;
  KvWriteArgs write{qkv + q, row, s.head_dim, qkv + q + kv, row, s.head_dim,
                    {layer.k_cache, block, slot, s.head_dim, s.kv_fp16},
                    {layer.v_cache, block, slot, s.head_dim, s.kv_fp16},
                    step.slot_mapping, step.num_tokens, s.num_kv_heads, s.head_dim, s.block_size, s.num_blocks};
  reshape_and_cache(write, num_threads);
  PagedAttentionArgs args{qkv, row, s.head_dim, out, q, s.head_dim,
                          {layer.k_cache, block, slot, s.head_dim, s.kv_fp16},
                          {layer.v_cache, block, slot, s.head_dim, s.kv_fp16},
                          step.block_table, step.max_blocks_per_seq, step.seq_lens, step.cu_seqlens_q,
                          step.num_tokens, step.num_seqs, s.num_heads, s.num_kv_heads, s.head_dim, s.block_size,
                          step.max_blocks_per_seq, s.num_blocks, s.scale, s.sliding_window};
  paged_attention(args, num_threads);
}

void DecoderProgram::run(const DecoderStep& step, float* hidden, float* scratch, int num_threads) const {
  const DecoderShape& s = shape_;
  const int64_t t = step.num_tokens;
  const int64_t q = q_size(s), kv = kv_size(s);
  float* residual = scratch;
  float* x = residual + t * s.hidden;
  float* qkv = x + t * s.hidden;
  float* attn = qkv + t * (q + 2 * kv);
  float* gate_up = attn + t * q;
  float* act = gate_up + t * 2 * s.intermediate;
  std::memcpy(residual, hidden, sizeof(float) * static_cast<size_t>(t * s.hidden));  // embeddings start the stream
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayerWeights& layer = layers_[i];
    if (i == 0) {
      rms_norm(hidden, layer.input_norm, nullptr, nullptr, x, t, s.hidden, s.eps, num_threads);
    } else {  // the previous layer's MLP output joins the residual stream here
      rms_norm(hidden, layer.input_norm, residual, residual, x, t, s.hidden, s.eps, num_threads);
    }
    project(layer.qkv, x, qkv, t, num_threads);
    attention(layer, step, qkv, attn, num_threads);
    project(layer.o, attn, hidden, t, num_threads);
    rms_norm(hidden, layer.post_norm, residual, residual, x, t, s.hidden, s.eps, num_threads);
    project(layer.gate_up, x, gate_up, t, num_threads);
    silu_and_mul(gate_up, act, t, s.intermediate, num_threads);
    project(layer.down, act, hidden, t, num_threads);
  }
  rms_norm(hidden, final_norm_, residual, residual, hidden, t, s.hidden, s.eps, num_threads);
}

}  // namespace bastion::cpu
