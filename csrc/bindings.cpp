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
#include <cstdint>

#include "cpu/attention_plan.h"
#include "cpu/cache_write.h"
#include "cpu/elementwise.h"
#include "cpu/paged_attention.h"

namespace {

// Python passes tensor.data_ptr() ints; the wrapper (bastion/ops/cpu_backend.py) has already
// checked dtype (fp32), device (cpu) and that the innermost dim is contiguous.
template <typename T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

bastion::cpu::PagedCache as_cache(std::uintptr_t data, int64_t block_stride, int64_t slot_stride, int64_t head_stride) {
  return {as_ptr<const float>(data), block_stride, slot_stride, head_stride};
}

}  // namespace

static void bind_cpu(py::module_& m) {
  namespace cpu = bastion::cpu;
  py::module_ sub = m.def_submodule("cpu", "fp32 CPU kernels on raw tensor pointers (see bastion.ops.cpu_backend)");
  sub.def(
      "paged_attention",
      [](std::uintptr_t q, int64_t q_ts, int64_t q_hs, std::uintptr_t out, int64_t out_ts, int64_t out_hs,
         std::uintptr_t k, int64_t k_bs, int64_t k_ss, int64_t k_hs, std::uintptr_t v, int64_t v_bs, int64_t v_ss,
         int64_t v_hs, std::uintptr_t block_table, int64_t block_table_stride, std::uintptr_t seq_lens,
         std::uintptr_t cu_seqlens_q, int64_t num_tokens, int num_seqs, int num_heads, int num_kv_heads, int head_dim,
         int block_size, int max_blocks_per_seq, int64_t num_blocks, float scale, int sliding_window, int threads) {
        const cpu::PagedAttentionArgs args{as_ptr<const float>(q), q_ts, q_hs, as_ptr<float>(out), out_ts, out_hs,
                                           as_cache(k, k_bs, k_ss, k_hs), as_cache(v, v_bs, v_ss, v_hs),
                                           as_ptr<const int32_t>(block_table), block_table_stride,
                                           as_ptr<const int32_t>(seq_lens), as_ptr<const int32_t>(cu_seqlens_q),
                                           num_tokens, num_seqs, num_heads, num_kv_heads, head_dim, block_size,
                                           max_blocks_per_seq, num_blocks, scale, sliding_window};
        py::gil_scoped_release release;
        cpu::paged_attention(args, threads);
      },
      "Paged attention over fp32 NHD caches; pointers are tensor.data_ptr() ints, strides in elements.");
  sub.def(
      "reshape_and_cache",
      [](std::uintptr_t key, int64_t key_ts, int64_t key_hs, std::uintptr_t value, int64_t value_ts,
         int64_t value_hs, std::uintptr_t k_cache, int64_t k_bs, int64_t k_ss, int64_t k_hs, std::uintptr_t v_cache,
         int64_t v_bs, int64_t v_ss, int64_t v_hs, std::uintptr_t slot_mapping, int64_t num_tokens,
         int num_kv_heads, int head_dim, int block_size, int64_t num_blocks, int threads) {
        const cpu::KvWriteArgs args{as_ptr<const float>(key), key_ts, key_hs, as_ptr<const float>(value), value_ts,
                                    value_hs, {as_ptr<float>(k_cache), k_bs, k_ss, k_hs},
                                    {as_ptr<float>(v_cache), v_bs, v_ss, v_hs}, as_ptr<const int64_t>(slot_mapping),
                                    num_tokens, num_kv_heads, head_dim, block_size, num_blocks};
        py::gil_scoped_release release;
        cpu::reshape_and_cache(args, threads);
      },
      "Write K/V rows into their cache slots (int64 slot_mapping, -1 = skip).");
  sub.def(
      "rms_norm",
      [](std::uintptr_t x, std::uintptr_t weight, std::uintptr_t residual_in, std::uintptr_t residual_out,
         std::uintptr_t out, int64_t rows, int hidden, float eps, int threads) {
        py::gil_scoped_release release;
        cpu::rms_norm(as_ptr<const float>(x), as_ptr<const float>(weight), as_ptr<const float>(residual_in),
                      as_ptr<float>(residual_out), as_ptr<float>(out), rows, hidden, eps, threads);
      },
      "RMSNorm of contiguous fp32 rows; with residual_in (0 = none), residual_out = x + residual_in is normalised.");
  sub.def(
      "silu_and_mul",
      [](std::uintptr_t x, std::uintptr_t out, int64_t rows, int d, int threads) {
        py::gil_scoped_release release;
        cpu::silu_and_mul(as_ptr<const float>(x), as_ptr<float>(out), rows, d, threads);
      },
      "silu(x[:, :d]) * x[:, d:] for contiguous fp32 x [rows, 2d].");
  sub.def(
      "attention_plan",
      [](py::array_t<int32_t, py::array::c_style | py::array::forcecast> seq_lens,
         py::array_t<int32_t, py::array::c_style | py::array::forcecast> cu_seqlens_q, int num_kv_heads,
         int group_size, int sliding_window, int threads) {
        if (cu_seqlens_q.size() != seq_lens.size() + 1) throw std::invalid_argument("cu_seqlens_q needs num_seqs + 1 entries");
        cpu::AttentionPlanOptions options;
        options.num_threads = threads;
        const cpu::AttentionPlan plan =
            cpu::plan_attention(seq_lens.data(), cu_seqlens_q.data(), static_cast<int>(seq_lens.size()), num_kv_heads,
                                group_size, sliding_window, options);
        py::list items;
        for (const auto& it : plan.items) items.append(py::make_tuple(it.seq, it.kv_head, it.q_begin, it.q_end, it.kv_begin, it.kv_end, it.partial));
        py::dict result;
        result["items"] = items;
        result["num_merges"] = plan.merges.size();
        result["num_partials"] = plan.num_partials;
        return result;
      },
      "The work items paged_attention would run: (seq, kv_head, q_begin, q_end, kv_begin, kv_end, partial).");
}
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
