// Paged decode attention (one query token per sequence), templated on element type, head_dim and
// the number of query heads a CTA serves. Included only by the per-configuration .cu files.
//
// Work mapping: one CTA per (KV head [x head chunk], sequence, KV split). The CTA loads K/V of its
// KV head once and scores it against all query heads of the GQA group, so KV bytes are read once
// per group instead of once per query head. Inside the CTA, head_dim is split into 16-byte lanes
// (HEAD_DIM / 8 threads per token row) and the 128 threads cover several token rows; each row runs
// its own online softmax over a strided slice of the split, and the rows are merged through shared
// memory at the end. Accumulation is fp32 throughout.
#pragma once

#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

#include "paged_decode.h"
#include "vec_types.cuh"

namespace bastion::cuda {

constexpr int kDecodeThreads = 128;
// Scores live in the log2 domain: q is pre-multiplied by scale * log2(e), so exp2f replaces expf.
constexpr float kLog2e = 1.4426950408889634f;

template <int HEAD_DIM, int MAX_G>
struct DecodeTile {
  static_assert(HEAD_DIM % kVecElems == 0, "head_dim must be a whole number of 16-byte vectors");
  static constexpr int kLanes = HEAD_DIM / kVecElems;  // threads sharing one token row
  static_assert(32 % kLanes == 0, "a token row must not straddle two warps");
  static constexpr int kRows = kDecodeThreads / kLanes;
  // Tokens each row loads before using any of them: more bytes in flight per thread, bounded by
  // the registers the q tile and accumulators already take (MAX_G * 16 floats).
  static constexpr int kUnroll = MAX_G >= 8 ? 2 : 4;
  static constexpr int kTokensPerStep = kRows * kUnroll;
};

// Sum over the LANES threads of one token row (consecutive lanes, aligned to LANES).
template <int LANES>
__device__ __forceinline__ float row_sum(float x) {
#pragma unroll
  for (int offset = LANES / 2; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Reference point for exp2: the running max, or 0 while nothing has been seen (avoids inf - inf).
__device__ __forceinline__ float exp_base(float running_max) {
  return running_max == -CUDART_INF_F ? 0.f : running_max;
}

template <typename T, int HEAD_DIM, int MAX_G>
__global__ void __launch_bounds__(kDecodeThreads)
    paged_decode_kernel(const BastionPagedAttentionArgs args, const int32_t head_chunks, const int32_t split_tokens) {
  using Tile = DecodeTile<HEAD_DIM, MAX_G>;
  constexpr int kLanes = Tile::kLanes;
  constexpr int kRows = Tile::kRows;
  constexpr int kUnroll = Tile::kUnroll;

  const int group = args.num_heads / args.num_kv_heads;
  const int kv_head = blockIdx.x / head_chunks;
  const int chunk = blockIdx.x % head_chunks;
  const int first_head = kv_head * group + chunk * MAX_G;
  const int tile_heads = min(MAX_G, group - chunk * MAX_G);
  const int seq = blockIdx.y;
  const int split = blockIdx.z;
  const int lane = threadIdx.x % kLanes;
  const int row = threadIdx.x / kLanes;

  // Clamped to the block table's capacity: a bad seq_len must not read past the table's row.
  const int seq_len = static_cast<int>(
      min(static_cast<int64_t>(args.seq_lens[seq]), static_cast<int64_t>(args.max_blocks_per_seq) * args.block_size));
  const int window_begin = args.sliding_window > 0 ? max(0, seq_len - args.sliding_window) : 0;
  const int begin = window_begin + split * split_tokens;
  const int end = min(seq_len, begin + split_tokens);

  // This thread's 8-element slice of every query head in the tile; absent heads score 0 and are
  // never stored, which keeps the loops below free of per-head branches.
  float q[MAX_G][kVecElems];
  const T* q_seq = static_cast<const T*>(args.q) + seq * args.q_stride_token + lane * kVecElems;
  const float q_scale = args.scale * kLog2e;
#pragma unroll
  for (int h = 0; h < MAX_G; ++h) {
    if (h < tile_heads) {
      unpack8<T>(*reinterpret_cast<const uint4*>(q_seq + (first_head + h) * args.q_stride_head), q[h]);
#pragma unroll
      for (int i = 0; i < kVecElems; ++i) q[h][i] *= q_scale;
    } else {
#pragma unroll
      for (int i = 0; i < kVecElems; ++i) q[h][i] = 0.f;
    }
  }

  float run_max[MAX_G];
  float run_sum[MAX_G];
  float acc[MAX_G][kVecElems];
#pragma unroll
  for (int h = 0; h < MAX_G; ++h) {
    run_max[h] = -CUDART_INF_F;
    run_sum[h] = 0.f;
#pragma unroll
    for (int i = 0; i < kVecElems; ++i) acc[h][i] = 0.f;
  }

  // Index math in int64: slot * row_stride overflows int32 for caches over 2^31 elements.
  const int64_t row_stride = static_cast<int64_t>(args.num_kv_heads) * HEAD_DIM;
  const int64_t head_offset = static_cast<int64_t>(kv_head) * HEAD_DIM + lane * kVecElems;
  const T* k_base = static_cast<const T*>(args.k_cache) + head_offset;
  const T* v_base = static_cast<const T*>(args.v_cache) + head_offset;
  const int32_t* blocks = args.block_table + static_cast<int64_t>(seq) * args.max_blocks_per_seq;

  // The loop bounds are the same for every thread of the CTA, so the row shuffles below always
  // run with the whole warp converged; rows past `end` just load nothing and score -inf.
  for (int step = begin; step < end; step += Tile::kTokensPerStep) {
    uint4 k_raw[kUnroll];
    uint4 v_raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = step + u * kRows + row;
      if (t < end) {
        const int64_t slot = static_cast<int64_t>(blocks[t / args.block_size]) * args.block_size + t % args.block_size;
        k_raw[u] = load_stream(k_base + slot * row_stride);
        v_raw[u] = load_stream(v_base + slot * row_stride);
      } else {
        k_raw[u] = make_uint4(0u, 0u, 0u, 0u);
        v_raw[u] = make_uint4(0u, 0u, 0u, 0u);
      }
    }

    float score[kUnroll][MAX_G];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float k[kVecElems];
      unpack8<T>(k_raw[u], k);
      const bool valid = step + u * kRows + row < end;
#pragma unroll
      for (int h = 0; h < MAX_G; ++h) {
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < kVecElems; ++i) dot = fmaf(q[h][i], k[i], dot);
        dot = row_sum<kLanes>(dot);
        score[u][h] = valid ? dot : -CUDART_INF_F;
      }
    }

    // Online softmax, one rescale per step: score[][] becomes the probabilities p.
#pragma unroll
    for (int h = 0; h < MAX_G; ++h) {
      float step_max = run_max[h];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) step_max = fmaxf(step_max, score[u][h]);
      const float base = exp_base(step_max);
      const float alpha = exp2f(run_max[h] - base);
      run_max[h] = step_max;
      float p_sum = 0.f;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        score[u][h] = exp2f(score[u][h] - base);
        p_sum += score[u][h];
      }
      run_sum[h] = run_sum[h] * alpha + p_sum;
#pragma unroll
      for (int i = 0; i < kVecElems; ++i) acc[h][i] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float v[kVecElems];
      unpack8<T>(v_raw[u], v);
#pragma unroll
      for (int h = 0; h < MAX_G; ++h) {
#pragma unroll
        for (int i = 0; i < kVecElems; ++i) acc[h][i] = fmaf(score[u][h], v[i], acc[h][i]);
      }
    }
  }

  // Merge the kRows row-partials of each head: row weights first, then the weighted sums.
  __shared__ float s_max[MAX_G][kRows];
  __shared__ float s_sum[MAX_G][kRows];
  __shared__ __align__(16) float s_acc[kRows][MAX_G][HEAD_DIM];
  __shared__ float s_weight[MAX_G][kRows];
  __shared__ float s_lse[MAX_G];
#pragma unroll
  for (int h = 0; h < MAX_G; ++h) {
    if (lane == 0) {
      s_max[h][row] = run_max[h];
      s_sum[h][row] = run_sum[h];
    }
    float4* dst = reinterpret_cast<float4*>(&s_acc[row][h][lane * kVecElems]);
    dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
    dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
  }
  __syncthreads();
  if (threadIdx.x < MAX_G) {
    const int h = threadIdx.x;
    float head_max = -CUDART_INF_F;
    for (int r = 0; r < kRows; ++r) head_max = fmaxf(head_max, s_max[h][r]);
    const float base = exp_base(head_max);
    float total = 0.f;
    for (int r = 0; r < kRows; ++r) total += s_sum[h][r] * exp2f(s_max[h][r] - base);
    // An empty split (or seq_len 0) has total 0: weights 0, output 0, LSE -inf for the merge.
    const float inv_total = total > 0.f ? 1.f / total : 0.f;
    for (int r = 0; r < kRows; ++r) s_weight[h][r] = exp2f(s_max[h][r] - base) * inv_total;
    s_lse[h] = total > 0.f ? base + log2f(total) : -CUDART_INF_F;
  }
  __syncthreads();

  const int num_splits = gridDim.z;
  for (int idx = threadIdx.x; idx < MAX_G * kLanes; idx += kDecodeThreads) {
    const int h = idx / kLanes;
    const int c = idx % kLanes;
    if (h >= tile_heads) continue;
    float o[kVecElems];
#pragma unroll
    for (int i = 0; i < kVecElems; ++i) o[i] = 0.f;
    for (int r = 0; r < kRows; ++r) {
      const float w = s_weight[h][r];
#pragma unroll
      for (int i = 0; i < kVecElems; ++i) o[i] = fmaf(w, s_acc[r][h][c * kVecElems + i], o[i]);
    }
    const int64_t head_row = static_cast<int64_t>(seq) * args.num_heads + first_head + h;
    if (num_splits == 1) {
      T* out = static_cast<T*>(args.out) + head_row * HEAD_DIM + c * kVecElems;
      *reinterpret_cast<uint4*>(out) = pack8<T>(o);
    } else {
      // Workspace: fp32 partials [seq, head, split, head_dim], then LSEs [seq, head, split].
      float* partial = static_cast<float*>(args.workspace) + (head_row * num_splits + split) * HEAD_DIM + c * kVecElems;
      reinterpret_cast<float4*>(partial)[0] = make_float4(o[0], o[1], o[2], o[3]);
      reinterpret_cast<float4*>(partial)[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (c == 0) {
        float* lse = static_cast<float*>(args.workspace) +
                     static_cast<int64_t>(args.num_seqs) * args.num_heads * num_splits * HEAD_DIM;
        lse[head_row * num_splits + split] = s_lse[h];
      }
    }
  }
}

template <typename T, int HEAD_DIM, int MAX_G>
cudaError_t launch_decode_tile(const BastionPagedAttentionArgs& args, const BastionDecodePlan& plan,
                               cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(args.num_kv_heads * plan.head_chunks), static_cast<unsigned>(args.num_seqs),
                  static_cast<unsigned>(plan.num_splits));
  paged_decode_kernel<T, HEAD_DIM, MAX_G>
      <<<grid, kDecodeThreads, 0, stream>>>(args, plan.head_chunks, plan.split_tokens);
  return cudaGetLastError();
}

template <typename T, int HEAD_DIM>
cudaError_t launch_paged_decode(const BastionPagedAttentionArgs& args, const BastionDecodePlan& plan,
                                cudaStream_t stream) {
  cudaError_t err;
  switch (plan.max_group) {
    case 1: err = launch_decode_tile<T, HEAD_DIM, 1>(args, plan, stream); break;
    case 2: err = launch_decode_tile<T, HEAD_DIM, 2>(args, plan, stream); break;
    case 4: err = launch_decode_tile<T, HEAD_DIM, 4>(args, plan, stream); break;
    default: err = launch_decode_tile<T, HEAD_DIM, BASTION_DECODE_MAX_GROUP>(args, plan, stream); break;
  }
  if (err != cudaSuccess || plan.num_splits == 1) return err;
  return launch_decode_merge<T>(args, plan, stream);
}

}  // namespace bastion::cuda
