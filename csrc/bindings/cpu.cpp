// Bindings of csrc/cpu.
#include "bindings/bindings.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/attention_plan.h"
#include "cpu/cache_write.h"
#include "cpu/decoder_program.h"
#include "cpu/elementwise.h"
#include "cpu/paged_attention.h"
#include "cpu/quant_gemv.h"
#include "cpu/token_bitmask.h"

namespace {

// Python passes tensor.data_ptr() ints; the wrapper (bastion/ops/cpu_backend.py) has already
// checked dtype (fp32), device (cpu) and that the innermost dim is contiguous.
template <typename T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

bastion::cpu::ActivationBits as_bits(int bits) {
  if (bits != 32 && bits != 16 && bits != 8) throw std::invalid_argument("activation_bits must be 32, 16 or 8");
  return static_cast<bastion::cpu::ActivationBits>(bits);
}

bastion::cpu::QuantIsa as_isa(const std::string& name) {
  bastion::cpu::QuantIsa isa;
  if (!bastion::cpu::parse_quant_isa(name.c_str(), isa)) {
    throw std::invalid_argument("quant isa must be auto, avx2, avxvnni or avx512vnni, got " + name);
  }
  return isa;
}

// ([(blocks, ggml type, rows), ...], cols, bias or 0) -> a quantized linear layer of the decoder program
bastion::cpu::QuantLinear as_linear(const py::tuple& t) {
  namespace cpu = bastion::cpu;
  if (t.size() != 3) throw std::invalid_argument("decoder program: a linear is ([(blocks, ggml_type, rows)], cols, bias)");
  const auto parts = t[0].cast<std::vector<std::tuple<std::uintptr_t, int, int64_t>>>();
  if (parts.empty() || parts.size() > cpu::QuantLinear::kMaxParts) {
    throw std::invalid_argument("decoder program: a linear has 1 to 3 parts");
  }
  cpu::QuantLinear linear;
  for (const auto& [blocks, type, rows] : parts) {
    linear.parts[linear.num_parts++] = {as_ptr<const uint8_t>(blocks), static_cast<cpu::QuantType>(type), rows};
    linear.rows += rows;
  }
  linear.cols = t[1].cast<int64_t>();
  linear.bias = as_ptr<const float>(t[2].cast<std::uintptr_t>());
  return linear;
}

void bind_decoder_program(py::module_& sub) {
  namespace cpu = bastion::cpu;
  py::class_<cpu::DecoderProgram>(sub, "DecoderProgram",
                                  "The whole Llama decoder for small fp32 CPU steps as one call (see decoder_program.h).")
      .def(py::init([](int hidden, int num_heads, int num_kv_heads, int head_dim, int intermediate, int rotary_half,
                       int block_size, int64_t num_blocks, float eps, float scale, int sliding_window,
                       std::uintptr_t final_norm, int activation_bits, bool kv_fp16) {
             const cpu::DecoderShape shape{hidden,     num_heads, num_kv_heads, head_dim,       intermediate, rotary_half,
                                           block_size, num_blocks, eps,        scale,          sliding_window, kv_fp16};
             return cpu::DecoderProgram(shape, as_ptr<const float>(final_norm), as_bits(activation_bits));
           }),
           py::kw_only(), py::arg("hidden"), py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("head_dim"),
           py::arg("intermediate"), py::arg("rotary_half"), py::arg("block_size"), py::arg("num_blocks"),
           py::arg("eps"), py::arg("scale"), py::arg("sliding_window"), py::arg("final_norm"),
           py::arg("activation_bits"), py::arg("kv_fp16") = false)
      .def(
          "add_layer",
          [](cpu::DecoderProgram& program, std::uintptr_t input_norm, std::uintptr_t post_norm, const py::tuple& qkv,
             const py::tuple& o, const py::tuple& gate_up, const py::tuple& down, std::uintptr_t k_cache,
             std::uintptr_t v_cache) {
            program.add_layer({as_ptr<const float>(input_norm), as_ptr<const float>(post_norm), as_linear(qkv),
                               as_linear(o), as_linear(gate_up), as_linear(down), as_ptr<void>(k_cache),
                               as_ptr<void>(v_cache)});
          },
          "Append a layer: norm weights, four ([(blocks, ggml_type, rows)], cols, bias) linears, contiguous K/V caches "
          "(fp16 when the program was made with kv_fp16).")
      .def("scratch_floats", &cpu::DecoderProgram::scratch_floats, "Scratch floats a step of this many tokens needs.")
      .def_property_readonly("num_layers", &cpu::DecoderProgram::num_layers)
      .def(
          "run",
          [](const cpu::DecoderProgram& program, std::uintptr_t hidden, std::uintptr_t scratch, int64_t num_tokens,
             std::uintptr_t cos, std::uintptr_t sin, std::uintptr_t slot_mapping, std::uintptr_t block_table,
             int max_blocks_per_seq, std::uintptr_t seq_lens, std::uintptr_t cu_seqlens_q, int num_seqs, int threads) {
            const cpu::DecoderStep step{num_tokens, as_ptr<const float>(cos), as_ptr<const float>(sin),
                                        as_ptr<const int64_t>(slot_mapping), as_ptr<const int32_t>(block_table),
                                        max_blocks_per_seq, as_ptr<const int32_t>(seq_lens),
                                        as_ptr<const int32_t>(cu_seqlens_q), num_seqs};
            py::gil_scoped_release release;
            program.run(step, as_ptr<float>(hidden), as_ptr<float>(scratch), threads);
          },
          "Embeddings in hidden [num_tokens, hidden] -> final-normed hidden states; writes the step's K/V.");
}

bastion::cpu::PagedCache as_cache(std::uintptr_t data, int64_t block_stride, int64_t slot_stride, int64_t head_stride,
                                  bool fp16) {
  return {as_ptr<const void>(data), block_stride, slot_stride, head_stride, fp16};
}

}  // namespace

void bastion_bindings::bind_cpu(py::module_& m) {
  namespace cpu = bastion::cpu;
  py::module_ sub = m.def_submodule("cpu", "fp32 CPU kernels on raw tensor pointers (see bastion.ops.cpu_backend)");
  sub.def(
      "paged_attention",
      [](std::uintptr_t q, int64_t q_ts, int64_t q_hs, std::uintptr_t out, int64_t out_ts, int64_t out_hs,
         std::uintptr_t k, int64_t k_bs, int64_t k_ss, int64_t k_hs, std::uintptr_t v, int64_t v_bs, int64_t v_ss,
         int64_t v_hs, std::uintptr_t block_table, int64_t block_table_stride, std::uintptr_t seq_lens,
         std::uintptr_t cu_seqlens_q, int64_t num_tokens, int num_seqs, int num_heads, int num_kv_heads, int head_dim,
         int block_size, int max_blocks_per_seq, int64_t num_blocks, float scale, int sliding_window, int threads,
         bool kv_fp16) {
        const cpu::PagedAttentionArgs args{as_ptr<const float>(q), q_ts, q_hs, as_ptr<float>(out), out_ts, out_hs,
                                           as_cache(k, k_bs, k_ss, k_hs, kv_fp16), as_cache(v, v_bs, v_ss, v_hs, kv_fp16),
                                           as_ptr<const int32_t>(block_table), block_table_stride,
                                           as_ptr<const int32_t>(seq_lens), as_ptr<const int32_t>(cu_seqlens_q),
                                           num_tokens, num_seqs, num_heads, num_kv_heads, head_dim, block_size,
                                           max_blocks_per_seq, num_blocks, scale, sliding_window};
        py::gil_scoped_release release;
        cpu::paged_attention(args, threads);
      },
      "Paged attention of fp32 q over fp32 (or, kv_fp16, fp16) NHD caches; pointers are tensor.data_ptr() ints, "
      "strides in elements.");
  sub.def(
      "reshape_and_cache",
      [](std::uintptr_t key, int64_t key_ts, int64_t key_hs, std::uintptr_t value, int64_t value_ts,
         int64_t value_hs, std::uintptr_t k_cache, int64_t k_bs, int64_t k_ss, int64_t k_hs, std::uintptr_t v_cache,
         int64_t v_bs, int64_t v_ss, int64_t v_hs, std::uintptr_t slot_mapping, int64_t num_tokens,
         int num_kv_heads, int head_dim, int block_size, int64_t num_blocks, int threads, bool kv_fp16) {
        const cpu::KvWriteArgs args{as_ptr<const float>(key), key_ts, key_hs, as_ptr<const float>(value), value_ts,
                                    value_hs, {as_ptr<void>(k_cache), k_bs, k_ss, k_hs, kv_fp16},
                                    {as_ptr<void>(v_cache), v_bs, v_ss, v_hs, kv_fp16}, as_ptr<const int64_t>(slot_mapping),
                                    num_tokens, num_kv_heads, head_dim, block_size, num_blocks};
        py::gil_scoped_release release;
        cpu::reshape_and_cache(args, threads);
      },
      "Write fp32 K/V rows into their cache slots (int64 slot_mapping, -1 = skip), rounded to fp16 when kv_fp16.");
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
      "apply_token_bitmask",
      [](std::uintptr_t logits, int64_t row_stride, std::uintptr_t bitmask, int64_t num_words, std::uintptr_t indices,
         int64_t num_rows, int64_t vocab, int threads) {
        py::gil_scoped_release release;
        cpu::apply_token_bitmask(as_ptr<float>(logits), row_stride, as_ptr<const int32_t>(bitmask), num_words,
                                 as_ptr<const int64_t>(indices), num_rows, vocab, threads);
      },
      "-inf into the fp32 logits rows indices[r] (int64; 0 = rows 0..num_rows-1) wherever bitmask row r\n"
      "(contiguous int32, num_words per row) has a 0 bit; columns past 32 * num_words too.");
  sub.def(
      "quant_matmul",
      [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t y, int64_t M, int64_t N, int64_t K, int ggml_type,
         int threads, int activation_bits, int64_t ldy, const std::string& isa) {
        const auto type = static_cast<cpu::QuantType>(ggml_type);
        const int values = cpu::quant_block_values(type);
        if (values == 0) throw std::invalid_argument("quant_matmul: unsupported ggml type");
        if (K % values != 0) {
          throw std::invalid_argument("quant_matmul: K must be a multiple of " + std::to_string(values) +
                                      " for this ggml type");
        }
        if (ldy != 0 && ldy < N) throw std::invalid_argument("quant_matmul: ldy must be 0 or >= N");
        const cpu::ActivationBits bits = as_bits(activation_bits);
        const cpu::QuantIsa chosen = as_isa(isa);
        if (!cpu::quant_isa_supported(chosen)) throw std::invalid_argument("quant_matmul: this CPU cannot run " + isa);
        py::gil_scoped_release release;
        cpu::quant_matmul(as_ptr<const float>(x), as_ptr<const uint8_t>(w), as_ptr<float>(y), M, N, K, type, threads,
                          bits, ldy, chosen);
      },
      py::arg("x"), py::arg("w"), py::arg("y"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("ggml_type"),
      py::arg("threads"), py::arg("activation_bits"), py::arg("ldy"), py::pos_only(), py::arg("isa") = "auto",
      "y[M, N] = x[M, K] @ W^T for fp32 x/y and W rows of GGUF blocks (ggml types 2 Q4_0, 3 Q4_1, 6 Q5_0, "
      "7 Q5_1, 8 Q8_0, 10 Q2_K, 11 Q3_K, 12 Q4_K, 13 Q5_K, 14 Q6_K); y rows are ldy apart (0 = N);\n"
      "activation_bits 16 / 8 round x per 32 values to int16 / int8 first (integer dot products); 32 keeps fp32.\n"
      "isa: the instruction set of the integer paths (\"auto\" = quant_isa()).");
  sub.def(
      "quant_isa", []() { return std::string(cpu::quant_isa_name(cpu::active_quant_isa())); },
      "The instruction set quant_matmul's integer paths use now: avx2, avxvnni or avx512vnni.");
  sub.def(
      "detected_quant_isa", []() { return std::string(cpu::quant_isa_name(cpu::detected_quant_isa())); },
      "The best instruction set of quant_matmul's integer paths this CPU runs.");
  sub.def(
      "set_quant_isa",
      [](const std::string& name) {
        const std::string previous = cpu::quant_isa_name(cpu::active_quant_isa());
        if (!cpu::set_quant_isa(as_isa(name))) throw std::invalid_argument("set_quant_isa: this CPU cannot run " + name);
        return previous;
      },
      "Force the instruction set of quant_matmul and the decoder program for the whole process (tests, benchmarks);\n"
      "\"auto\" goes back to BASTION_QUANT_ISA or the detected one. Returns the previous active one.");
  sub.def(
      "dequantize_rows",
      [](std::uintptr_t w, int ggml_type, int64_t K, std::uintptr_t rows, int64_t first, int64_t num_rows,
         std::uintptr_t out, bool bf16_out, int threads) {
        bool ok;
        {
          py::gil_scoped_release release;
          ok = cpu::dequantize_rows(as_ptr<const uint8_t>(w), ggml_type, K, as_ptr<const int64_t>(rows), first,
                                    num_rows, as_ptr<void>(out), bf16_out, threads);
        }
        if (!ok) {
          throw std::invalid_argument("dequantize_rows: ggml type " + std::to_string(ggml_type) +
                                      " is not read, or K=" + std::to_string(K) + " is not a multiple of its block");
        }
      },
      "out[r] = row rows[r] (int64 pointer; 0 = rows first, first + 1, ...) of W [N, K] stored as ggml type "
      "ggml_type (F32, F16, BF16 or a quant_matmul type), as fp32 or (bf16_out) bf16.");
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
        for (const auto& it : plan.items) {
          items.append(py::make_tuple(it.seq, it.kv_head_begin, it.kv_head_end, it.q_begin, it.q_end, it.kv_begin,
                                      it.kv_end, it.partial));
        }
        py::dict result;
        result["items"] = items;
        result["num_merges"] = plan.merges.size();
        result["num_partials"] = plan.num_partials;
        return result;
      },
      "The work items paged_attention would run: (seq, kv_head_begin, kv_head_end, q_begin, q_end, kv_begin, "
      "kv_end, partial).");
  bind_decoder_program(sub);
}
