// The fused attention decoder's initial state, step and greedy loop in C++ (built and loaded by
// native.py beside it; registered as torch.ops.captioner.*).
//
// The same function as kernels.py beside it: at batch 1 a word there is two fp16 matrix
// products and some thirty small ATen calls from TorchScript's interpreter. Here the attention
// scores' sums, the softmax over locations, the context and the LSTM cell's arithmetic are plain
// loops over the few thousand numbers involved; the products stay fbgemm's
// (quantized::linear_dynamic_fp16), and the sigmoids and tanhs, the log-softmax and the top-k
// stay ATen's vectorised kernels. Sums run in another order than ATen's, so results match the
// TorchScript kernels to about 1e-6, not bit for bit.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/InferenceMode.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using torch::jit::Stack;

// fbgemm's JIT-compiled AVX2 kernels return with the upper halves of the YMM registers in use; until
// a vzeroupper, every SSE instruction that follows (glibc's, and this file's, compiled for baseline
// x86-64) pays a transition penalty: here it made the loops after the products four times slower.
#if defined(__x86_64__)
__attribute__((target("avx"))) void vzeroupper() { __builtin_ia32_vzeroupper(); }
#endif

void clear_upper_vector_state() {
#if defined(__x86_64__)
  static const bool has_avx = __builtin_cpu_supports("avx");
  if (has_avx) vzeroupper();
#endif
}

// fbgemm's fp16 GEMM through the dispatcher (the packed weights are a TorchScript class object).
at::Tensor linear_fp16(const at::Tensor& input, const c10::IValue& packed) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_dynamic_fp16", "");
  Stack stack{input, packed};
  op.callBoxed(&stack);
  clear_upper_vector_state();
  return std::move(stack[0]).toTensor();
}

struct Weights {
  at::Tensor word_gates;    // (V, 4H): every word's LSTM input part, gates in the order i, f, o, g
  at::Tensor score_weight;  // (A,): the doubled attention score weight
  c10::IValue from_context, from_new_hidden;  // packed fp16 products
  int64_t attention_dim, embed_dim, vocab_size;
};

// h, c (B, H); locations (1 or B, L, E); doubled keys (1 or B, L, A); the next step's projection of
// h (B, A + E + 4H: doubled query, gate, LSTM hidden part), whose rows may be strided.
struct State {
  at::Tensor h, c, locations, keys, from_h;
};

void check_state(const State& s, const Weights& w) {
  for (const at::Tensor* t : {&s.h, &s.c, &s.locations, &s.keys, &s.from_h, &w.word_gates, &w.score_weight}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(), "the native decoder takes float32 CPU tensors");
  }
  TORCH_CHECK(s.h.is_contiguous() && s.c.is_contiguous() && s.locations.is_contiguous() && s.keys.is_contiguous() &&
                  w.word_gates.is_contiguous() && w.score_weight.is_contiguous() && s.from_h.stride(1) == 1,
              "the native decoder takes contiguous state tensors");
  TORCH_CHECK(s.h.dim() == 2 && s.c.sizes() == s.h.sizes() && s.from_h.dim() == 2 && s.from_h.size(0) == s.h.size(0),
              "h, c and from_h need one row per caption");
  const int64_t hidden = s.h.size(1);
  TORCH_CHECK(s.from_h.size(1) == w.attention_dim + w.embed_dim + 4 * hidden, "from_h has the wrong width");
  TORCH_CHECK(w.word_gates.dim() == 2 && w.word_gates.size(1) == 4 * hidden && w.score_weight.numel() == w.attention_dim,
              "the word gate table or the score weight does not fit the state");
  TORCH_CHECK(s.keys.dim() == 3 && s.locations.dim() == 3 && s.keys.size(1) == s.locations.size(1),
              "keys and locations need the same locations");
  TORCH_CHECK(s.keys.size(2) == w.attention_dim && s.locations.size(2) == w.embed_dim, "keys or locations: wrong width");
  TORCH_CHECK(s.locations.size(0) == s.keys.size(0) && (s.keys.size(0) == 1 || s.keys.size(0) == s.h.size(0)),
              "keys and locations need one row, or one per caption");
}

// One word: tokens (B,) -> (logits (B, V), attention weights (B, L)); updates the state.
std::pair<at::Tensor, at::Tensor> step(const at::Tensor& tokens, State& s, const Weights& w) {
  check_state(s, w);
  const int64_t batch = s.h.size(0), hidden = s.h.size(1), length = s.keys.size(1);
  const int64_t adim = w.attention_dim, edim = w.embed_dim;
  const bool shared = s.keys.size(0) == 1;  // one image for every row (beam search)
  const auto tokens_ = tokens.contiguous();
  TORCH_CHECK(tokens_.scalar_type() == at::kLong && tokens_.numel() == batch, "tokens: one int64 id per caption");
  const int64_t* token = tokens_.data_ptr<int64_t>();
  const float* from_h = s.from_h.data_ptr<float>();
  const int64_t from_h_stride = s.from_h.stride(0);

  // attention: softmax over locations of 2w . sigmoid(2 keys + 2 query), the sigmoid in ATen
  at::Tensor scores = at::empty({batch, length, adim}, s.h.options());
  float* pre = scores.data_ptr<float>();
  const float* keys = s.keys.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    const float* query = from_h + b * from_h_stride;
    const float* key = keys + (shared ? 0 : b) * length * adim;
    float* out = pre + b * length * adim;
    for (int64_t l = 0; l < length; ++l) {
      for (int64_t a = 0; a < adim; ++a) out[l * adim + a] = key[l * adim + a] + query[a];
    }
  }
  scores.sigmoid_();
  at::Tensor attention = at::empty({batch, length}, s.h.options());
  float* weight = attention.data_ptr<float>();
  const float* score_weight = w.score_weight.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    float* row = weight + b * length;
    float top = -INFINITY;
    for (int64_t l = 0; l < length; ++l) {
      const float* x = pre + (b * length + l) * adim;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t a = 0; a < adim; ++a) dot += x[a] * score_weight[a];
      row[l] = dot;
      top = std::max(top, dot);
    }
    float total = 0.0f;
    for (int64_t l = 0; l < length; ++l) total += (row[l] = std::exp(row[l] - top));
    for (int64_t l = 0; l < length; ++l) row[l] /= total;
  }

  // the gated context sigmoid(beta) * (attention @ locations)
  at::Tensor context = at::zeros({batch, edim}, s.h.options());
  float* mixed = context.data_ptr<float>();
  const float* locations = s.locations.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    float* out = mixed + b * edim;
    const float* location = locations + (shared ? 0 : b) * length * edim;
    for (int64_t l = 0; l < length; ++l) {
      const float alpha = weight[b * length + l];
      for (int64_t e = 0; e < edim; ++e) out[e] += alpha * location[l * edim + e];
    }
  }
  context.mul_(s.from_h.narrow(1, adim, edim).sigmoid());

  // the LSTM cell: gates = context part + hidden part + the word's part; sigmoid and tanh in ATen
  at::Tensor gates = linear_fp16(context, w.from_context);  // (B, 4H), contiguous
  float* gate_sum = gates.data_ptr<float>();
  const float* word_gates = w.word_gates.data_ptr<float>();
  const int64_t vocab_rows = w.word_gates.size(0);
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(token[b] >= 0 && token[b] < vocab_rows, "token id out of range");
    float* g = gate_sum + b * 4 * hidden;
    const float* from_hidden = from_h + b * from_h_stride + adim + edim;
    const float* word = word_gates + token[b] * 4 * hidden;
    for (int64_t j = 0; j < 4 * hidden; ++j) g[j] = g[j] + from_hidden[j] + word[j];
  }
  gates.narrow(1, 0, 3 * hidden).sigmoid_();
  gates.narrow(1, 3 * hidden, hidden).tanh_();
  at::Tensor c = at::empty({batch, hidden}, s.h.options());
  float* c_out = c.data_ptr<float>();
  const float* c_in = s.c.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    const float* g = gate_sum + b * 4 * hidden;  // i, f, o, g
    for (int64_t j = 0; j < hidden; ++j) {
      c_out[b * hidden + j] = g[hidden + j] * c_in[b * hidden + j] + g[j] * g[3 * hidden + j];
    }
  }
  at::Tensor h = c.tanh();
  float* h_out = h.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    const float* o = gate_sum + b * 4 * hidden + 2 * hidden;
    for (int64_t j = 0; j < hidden; ++j) h_out[b * hidden + j] *= o[j];
  }

  // everything read from the new h: the logits, and the next step's query, gate and hidden part
  const at::Tensor out = linear_fp16(h, w.from_new_hidden);
  s.h = h;
  s.c = c;
  s.from_h = out.narrow(1, w.vocab_size, out.size(1) - w.vocab_size);
  return {out.narrow(1, 0, w.vocab_size), attention};
}

// The state before <start>, as FusedAttentionDecoder._kernel_state computes it: locations
// (B, L, E) = glue(layer_norm(features)), h and c from their mean, the doubled attention keys and
// the first step's projection of h (the product of every step, less its logits).
State initial_state(const at::Tensor& features, const at::Tensor& norm_weight, const at::Tensor& norm_bias, double eps,
                    const c10::IValue& glue, const c10::IValue& init, const c10::IValue& key,
                    const c10::IValue& from_new_hidden, int64_t vocab_size) {
  TORCH_CHECK(features.dim() == 3 && features.scalar_type() == at::kFloat, "features: a float32 (B, L, C) map");
  const auto normed = at::layer_norm(features, {features.size(2)}, norm_weight, norm_bias, eps);
  at::Tensor locations = linear_fp16(normed, glue);  // (B, L, E)
  const auto both = linear_fp16(locations.mean(1), init).tanh_().chunk(2, 1);
  at::Tensor h = both[0].contiguous(), c = both[1].contiguous();
  const at::Tensor from_h = linear_fp16(h, from_new_hidden);
  return {h, c, locations, linear_fp16(locations, key), from_h.narrow(1, vocab_size, from_h.size(1) - vocab_size)};
}

State state_from(const Stack& args, size_t first) {
  return {args[first].toTensor(), args[first + 1].toTensor(), args[first + 2].toTensor(), args[first + 3].toTensor(),
          args[first + 4].toTensor()};
}

Weights weights_from(const Stack& args, size_t first) {
  const auto sizes = args[first + 4].toIntVector();
  TORCH_CHECK(sizes.size() == 3, "sizes: [attention dim, embedding dim, vocabulary size]");
  return {args[first].toTensor(), args[first + 1].toTensor(), args[first + 2], args[first + 3],
          sizes[0], sizes[1], sizes[2]};
}

// step(tokens, h, c, locations, keys, from_h, <weights>) -> (logits, attention, h, c, from_h)
void step_boxed(const c10::OperatorHandle&, Stack* stack) {
  auto args = torch::jit::pop(*stack, 11);
  c10::InferenceMode guard;
  State s = state_from(args, 1);
  auto [logits, attention] = step(args[0].toTensor(), s, weights_from(args, 6));
  torch::jit::push(*stack, logits, attention, s.h, s.c, s.from_h);
}

// initial_state(features, norm_weight, norm_bias, eps, glue, init, key, from_new_hidden, vocab_size)
//   -> (h, c, locations, keys, from_h)
void initial_state_boxed(const c10::OperatorHandle&, Stack* stack) {
  auto args = torch::jit::pop(*stack, 9);
  c10::InferenceMode guard;
  State s = initial_state(args[0].toTensor(), args[1].toTensor(), args[2].toTensor(), args[3].toDouble(), args[4],
                          args[5], args[6], args[7], args[8].toInt());
  torch::jit::push(*stack, s.h, s.c, s.locations, s.keys, s.from_h);
}

// greedy(h, c, locations, keys, from_h, <weights>, mask, reads, scale, start_id, end_id, max_length, top_k)
//   -> per step: rows, top log-probs, top ids, chosen tokens, chosen log-probs, attention (flattened),
// as captioner.decoders.soft_attention.kernels.fused_greedy computes them.
void greedy_boxed(const c10::OperatorHandle&, Stack* stack) {
  auto args = torch::jit::pop(*stack, 17);
  c10::InferenceMode guard;
  State s = state_from(args, 0);
  const Weights w = weights_from(args, 5);
  const auto mask = args[10].toOptional<at::Tensor>();
  const auto reads = args[11].toOptional<at::Tensor>();  // (B, V): the token each chosen one is read as
  const double scale = args[12].toDouble();
  const int64_t start_id = args[13].toInt(), end_id = args[14].toInt();
  const int64_t max_length = args[15].toInt(), top_k = args[16].toInt();
  const auto ids = s.h.options().dtype(at::kLong);
  at::Tensor rows = at::arange(s.h.size(0), ids);  // which image each batch row is
  at::Tensor tokens = at::full({s.h.size(0)}, start_id, ids);
  at::Tensor inputs = tokens;
  std::vector<at::Tensor> records;
  for (int64_t i = 0; i < max_length; ++i) {
    auto [logits, attention] = step(inputs, s, w);
    if (mask.has_value()) {  // (V,) for every image, or (B, V) one row per image
      const bool per_image = mask->dim() == 2 && mask->size(0) != 1;
      logits = at::add(per_image ? mask->index_select(0, rows) : *mask, logits, scale);
    } else if (scale != 1.0) {
      logits = logits * scale;
    }
    auto [top_log_p, top_ids] = at::log_softmax(logits, -1).topk(top_k, -1);
    tokens = top_ids.select(1, 0).contiguous();
    records.insert(records.end(), {rows, top_log_p, top_ids, tokens, top_log_p.select(1, 0), attention});
    const int64_t* token = tokens.data_ptr<int64_t>();
    std::vector<int64_t> going;
    for (int64_t b = 0; b < tokens.size(0); ++b) {
      if (token[b] != end_id) going.push_back(b);
    }
    if (going.empty()) break;
    if (static_cast<int64_t>(going.size()) < tokens.size(0)) {  // drop the finished captions from the batch
      const at::Tensor keep = at::tensor(going, ids);
      rows = rows.index_select(0, keep);
      tokens = tokens.index_select(0, keep);
      if (s.keys.size(0) != 1) {  // one image per row: select the rows' images too
        s.locations = s.locations.index_select(0, keep);
        s.keys = s.keys.index_select(0, keep);
      }
      s.h = s.h.index_select(0, keep);
      s.c = s.c.index_select(0, keep);
      s.from_h = s.from_h.index_select(0, keep);
    }
    inputs = reads.has_value() ? reads->take(rows * reads->size(1) + tokens) : tokens;  // reads[rows, tokens]
  }
  torch::jit::push(*stack, c10::IValue(records));
}

}  // namespace

TORCH_LIBRARY(captioner, m) {
  const std::string packed = "__torch__.torch.classes.quantized.LinearPackedParamsBase";
  const std::string weights = "Tensor word_gates, Tensor score_weight, " + packed + " from_context, " + packed +
                              " from_new_hidden, int[] sizes";
  const std::string state = "Tensor h, Tensor c, Tensor locations, Tensor keys, Tensor from_h";
  m.def(("initial_state(Tensor features, Tensor norm_weight, Tensor norm_bias, float eps, " + packed + " glue, " +
         packed + " init, " + packed + " key, " + packed +
         " from_new_hidden, int vocab_size) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")
            .c_str(),
        torch::CppFunction::makeFromBoxedFunction<&initial_state_boxed>());
  m.def(("step(Tensor tokens, " + state + ", " + weights + ") -> (Tensor, Tensor, Tensor, Tensor, Tensor)").c_str(),
        torch::CppFunction::makeFromBoxedFunction<&step_boxed>());
  m.def(("greedy(" + state + ", " + weights +
         ", Tensor? mask, Tensor? reads, float scale, int start_id, int end_id, int max_length, int top_k) -> Tensor[]")
            .c_str(),
        torch::CppFunction::makeFromBoxedFunction<&greedy_boxed>());
}
