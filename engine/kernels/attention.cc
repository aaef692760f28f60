// CPU kernels for the two attention operators of our graphs, registered with ONNX Runtime as custom ops
// under the names and domain of its own (com.microsoft DecoderMaskedMultiHeadAttention and
// MultiHeadAttention): a session that loads this library runs them here, one that does not runs ORT's.
//
// Why: at a decoder step the attention problems are tiny (one query row per beam, 64-value heads, tens of
// keys) and ORT's CPU kernels spend most of their time around them: a GEMM call per (row, head), a mask
// tensor built per call, the cache read through the beam table one slot at a time. Here each (row, head)
// is three short loops with the head held in vector registers (measured: README, "Benchmark").
//
// Only the forms our graph builders emit are accepted (export/decoder_graph.py, export/encoder_graph.py);
// anything else fails the run with a message naming what was unexpected.
//
// No ONNX Runtime header is used: ort_abi.h declares the few entries of its C API that a custom op needs.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "ort_abi.h"

namespace {

constexpr float MASKED = -10000.0f;  // what ORT's kernels add to a masked score (mask_filter_value)
const OrtApiTable* api = nullptr;

template <typename F>
F entry(Entry e) { return reinterpret_cast<F>(api->entries[e]); }

struct Failure {
  std::string message;
};

void check(Status status) {
  if (status) {
    auto message = entry<const char* (*)(const OrtStatus*)>(GET_ERROR_MESSAGE)(status);
    std::string text = message ? message : "onnxruntime error";
    entry<void (*)(OrtStatus*)>(RELEASE_STATUS)(status);
    throw Failure{text};
  }
}

// A tensor of the kernel context: its shape and its data.
struct Tensor {
  std::vector<int64_t> shape;
  void* data = nullptr;
  bool present = false;

  template <typename T> T* as() const { return static_cast<T*>(data); }
  int64_t dim(size_t i) const { return shape.at(i); }
};

Tensor describe(const OrtValue* value) {
  Tensor t;
  if (!value) return t;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  check(entry<Status (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**)>(GET_TENSOR_TYPE_AND_SHAPE)(value, &info));
  size_t rank = 0;
  check(entry<Status (*)(const OrtTensorTypeAndShapeInfo*, size_t*)>(GET_DIMENSIONS_COUNT)(info, &rank));
  t.shape.resize(rank);
  check(entry<Status (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t)>(GET_DIMENSIONS)(info, t.shape.data(), rank));
  entry<void (*)(OrtTensorTypeAndShapeInfo*)>(RELEASE_TENSOR_TYPE_AND_SHAPE_INFO)(info);
  check(entry<Status (*)(OrtValue*, void**)>(GET_TENSOR_MUTABLE_DATA)(const_cast<OrtValue*>(value), &t.data));
  t.present = true;
  return t;
}

// The node's first `wanted` inputs; an input the node does not give is present = false.
std::vector<Tensor> inputs(OrtKernelContext* context, size_t wanted) {
  size_t count = 0;
  check(entry<Status (*)(const OrtKernelContext*, size_t*)>(KERNEL_CONTEXT_GET_INPUT_COUNT)(context, &count));
  std::vector<Tensor> tensors(wanted);
  for (size_t index = 0; index < wanted && index < count; ++index) {
    const OrtValue* value = nullptr;
    check(entry<Status (*)(const OrtKernelContext*, size_t, const OrtValue**)>(KERNEL_CONTEXT_GET_INPUT)(context, index, &value));
    tensors[index] = describe(value);
  }
  return tensors;
}

Tensor output(OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape) {
  OrtValue* value = nullptr;
  check(entry<Status (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**)>(KERNEL_CONTEXT_GET_OUTPUT)(
      context, index, shape.data(), shape.size(), &value));
  return describe(value);
}

void require(bool condition, const char* what) {
  if (!condition) throw Failure{what};
}

typedef float Lanes __attribute__((vector_size(64)));  // 16 floats: one AVX-512 register, two AVX or four SSE
constexpr int64_t LANES = 16;

// exp(x) for the softmax's x ≤ 0, in arithmetic the compiler vectorises (Cephes' expf polynomial, within a
// few ulp of libm's): the scalar libm call was a third of a decoder row's attention.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

typedef float Half __attribute__((vector_size(32)));
typedef float Quarter __attribute__((vector_size(16)));

inline Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The sum of a vector's lanes, halving it three times (one long chain of scalar adds was the step's bottleneck).
inline float lane_sum(Lanes v) {
  Half a, b;
  std::memcpy(&a, &v, sizeof a);
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
  a += b;
  Quarter c, d;
  std::memcpy(&c, &a, sizeof c);
  std::memcpy(&d, reinterpret_cast<const char*>(&a) + sizeof c, sizeof d);
  c += d;
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// One query row of one head against `count` keys: scores, softmax, the weighted sum of values into `out`.
// keys[t] / values[t] point at the head's row of key / value t; allowed (may be null) says which t may be seen.
// CHUNKS · 16 values per head, a compile-time count so that the sums stay in registers.
template <int CHUNKS>
__attribute__((always_inline)) inline void attend_fixed(const float* __restrict q, const float* const* keys,
                                                        const float* const* values, const int32_t* allowed,
                                                        int64_t count, float scale, float* __restrict scores,
                                                        float* __restrict out) {
  Lanes query[CHUNKS];
  for (int c = 0; c < CHUNKS; ++c) query[c] = load(q + c * LANES) * scale;
  float top = -INFINITY;
  for (int64_t t = 0; t < count; ++t) {
    Lanes sum = query[0] * load(keys[t]);
    for (int c = 1; c < CHUNKS; ++c) sum += query[c] * load(keys[t] + c * LANES);
    const float score = lane_sum(sum) + (allowed && allowed[t] == 0 ? MASKED : 0.0f);
    scores[t] = score;
    top = score > top ? score : top;
  }
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t t = 0; t < count; ++t) {
    scores[t] = exp_nonpositive(scores[t] - top);
    total += scores[t];
  }
  const float norm = 1.0f / total;
  Lanes sum[CHUNKS] = {};
  for (int64_t t = 0; t < count; ++t) {
    const float p = scores[t] * norm;
    for (int c = 0; c < CHUNKS; ++c) sum[c] += p * load(values[t] + c * LANES);
  }
  std::memcpy(out, sum, sizeof sum);
}

#define ATTEND_ARGS                                                                                        \
  const float *__restrict q, const float *const *keys, const float *const *values, const int32_t *allowed, \
      int64_t count, float scale, float *__restrict scores, float *__restrict out
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

CLONES void attend_64(ATTEND_ARGS) { attend_fixed<4>(q, keys, values, allowed, count, scale, scores, out); }
CLONES void attend_16(ATTEND_ARGS) { attend_fixed<1>(q, keys, values, allowed, count, scale, scores, out); }
CLONES void attend_32(ATTEND_ARGS) { attend_fixed<2>(q, keys, values, allowed, count, scale, scores, out); }
CLONES void attend_128(ATTEND_ARGS) { attend_fixed<8>(q, keys, values, allowed, count, scale, scores, out); }

// Any other head size, plainly.
void attend_any(ATTEND_ARGS, int64_t size) {
  float top = -INFINITY;
  for (int64_t t = 0; t < count; ++t) {
    float dot = 0.0f;
    for (int64_t i = 0; i < size; ++i) dot += q[i] * keys[t][i];
    scores[t] = dot * scale + (allowed && allowed[t] == 0 ? MASKED : 0.0f);
    top = scores[t] > top ? scores[t] : top;
  }
  float total = 0.0f;
  for (int64_t t = 0; t < count; ++t) total += scores[t] = exp_nonpositive(scores[t] - top);
  for (int64_t i = 0; i < size; ++i) out[i] = 0.0f;
  for (int64_t t = 0; t < count; ++t)
    for (int64_t i = 0; i < size; ++i) out[i] += scores[t] / total * values[t][i];
}

void attend_row(ATTEND_ARGS, int64_t size) {
  switch (size) {
    case 64: return attend_64(q, keys, values, allowed, count, scale, scores, out);
    case 16: return attend_16(q, keys, values, allowed, count, scale, scores, out);
    case 32: return attend_32(q, keys, values, allowed, count, scale, scores, out);
    case 128: return attend_128(q, keys, values, allowed, count, scale, scores, out);
    default: return attend_any(q, keys, values, allowed, count, scale, scores, out, size);
  }
}

struct Attributes {
  int64_t heads = 0;
  float scale = 0.0f;  // 0: 1/sqrt(head size)
};

Attributes read_attributes(const OrtKernelInfo* info) {
  Attributes a;
  check(entry<Status (*)(const OrtKernelInfo*, const char*, int64_t*)>(KERNEL_INFO_GET_ATTRIBUTE_INT64)(info, "num_heads", &a.heads));
  float scale = 0.0f;
  Status status = entry<Status (*)(const OrtKernelInfo*, const char*, float*)>(KERNEL_INFO_GET_ATTRIBUTE_FLOAT)(info, "scale", &scale);
  if (status) entry<void (*)(OrtStatus*)>(RELEASE_STATUS)(status);  // absent: the default
  else a.scale = scale;
  return a;
}

// DecoderMaskedMultiHeadAttention as the decoder step uses it (past_present_share_buffer = 1):
//   q, k, v [N, 1, D]; mask [N, T] int32 (T = past + 1, 1 = may attend); past key/value caches
//   [N, H, C, K] written at slot `past` in place; past_sequence_length [1]; beam_width [1];
//   cache_indirection [B, W, C]: slot t of row b·W + w was written by row b·W + indirection[b, w, t].
// Outputs: [N, 1, D] and the caches (bound to the same buffers as the past ones; copied otherwise).
struct CachedSelfAttention {
  static constexpr const char* NAME = "DecoderMaskedMultiHeadAttention";
  // q k v mask bias past_key past_value past_sequence_length beam_width cache_indirection
  static constexpr int INPUTS[] = {TENSOR_FLOAT, TENSOR_FLOAT, TENSOR_FLOAT, TENSOR_INT32, TENSOR_FLOAT,
                                   TENSOR_FLOAT, TENSOR_FLOAT, TENSOR_INT32, TENSOR_INT32, TENSOR_INT32};
  static constexpr size_t REQUIRED_INPUTS = 3, OUTPUTS = 3;
  Attributes attributes;

  void compute(OrtKernelContext* context) {
    const std::vector<Tensor> in = inputs(context, 10);
    const Tensor &q = in[0], &k = in[1], &v = in[2], &mask = in[3], &bias = in[4], &past_key = in[5], &past_value = in[6];
    const Tensor &past_length = in[7], &beam_width = in[8], &indirection = in[9];
    require(!bias.present, "DecoderMaskedMultiHeadAttention: attention bias is not supported by this kernel");
    require(past_key.present && past_value.present && past_length.present && past_key.shape.size() == 4,
            "DecoderMaskedMultiHeadAttention: this kernel needs past key/value caches [N, H, C, K] and past_sequence_length");
    const int64_t rows = past_key.dim(0), heads = past_key.dim(1), capacity = past_key.dim(2), size = past_key.dim(3);
    const int64_t model = heads * size, past = past_length.as<int32_t>()[0];
    require(heads == attributes.heads && q.shape.size() == 3 && q.dim(0) == rows && q.dim(1) == 1 &&
                q.dim(2) == model && k.shape == q.shape && v.shape == q.shape && past_value.shape == past_key.shape,
            "DecoderMaskedMultiHeadAttention: q, k, v [N, 1, D] and the caches [N, H, C, K] do not match");
    require(past >= 0 && past < capacity, "DecoderMaskedMultiHeadAttention: past_sequence_length is outside the cache");
    const int64_t total = past + 1;
    require(!mask.present || (mask.shape.size() == 2 && mask.dim(0) == rows && mask.dim(1) == total),
            "DecoderMaskedMultiHeadAttention: the mask must be [N, past + 1]");
    const int64_t width = beam_width.present ? beam_width.as<int32_t>()[0] : 1;
    require(width >= 1 && rows % width == 0, "DecoderMaskedMultiHeadAttention: rows are not a multiple of beam_width");
    require(!indirection.present || width == 1 ||
                (indirection.shape.size() == 3 && indirection.dim(0) * indirection.dim(1) == rows && indirection.dim(2) == capacity),
            "DecoderMaskedMultiHeadAttention: cache_indirection must be [N / W, W, C]");

    Tensor out = output(context, 0, {rows, 1, model});
    Tensor key_cache = output(context, 1, past_key.shape), value_cache = output(context, 2, past_value.shape);
    const size_t cache_bytes = sizeof(float) * rows * heads * capacity * size;
    if (key_cache.data != past_key.data) std::memcpy(key_cache.data, past_key.data, cache_bytes);
    if (value_cache.data != past_value.data) std::memcpy(value_cache.data, past_value.data, cache_bytes);
    float* keys = key_cache.as<float>();
    float* values = value_cache.as<float>();
    const float scale = attributes.scale != 0.0f ? attributes.scale : 1.0f / std::sqrt(float(size));
    const int32_t* table = indirection.present && width > 1 ? indirection.as<int32_t>() : nullptr;
    const int32_t* allowed = mask.present ? mask.as<int32_t>() : nullptr;
    std::vector<float> scores(total);
    // Each (row, head) reads its history from wherever the beam table points: the rows of the next pair are
    // requested from memory while this pair is computed (a real batch's caches are cold between two calls).
    std::vector<const float*> key_rows(total), value_rows(total), next_keys(total), next_values(total);
    auto locate = [&](int64_t n, int64_t h, std::vector<const float*>& key_at, std::vector<const float*>& value_at) {
      const int64_t first_row = n - n % width;  // the sentence's first beam
      const int32_t* parents = table ? table + n * capacity : nullptr;
      for (int64_t t = 0; t < total; ++t) {
        require(!parents || t >= past || (parents[t] >= 0 && parents[t] < width),
                "DecoderMaskedMultiHeadAttention: cache_indirection names a beam outside beam_width");
        const int64_t row = (parents && t < past) ? first_row + parents[t] : n;
        const int64_t at = ((row * heads + h) * capacity + t) * size;
        key_at[t] = keys + at;
        value_at[t] = values + at;
      }
    };
    for (int64_t n = 0; n < rows; ++n)  // this step's keys and values into their slots first
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t own = ((n * heads + h) * capacity + past) * size;
        std::memcpy(keys + own, k.as<float>() + n * model + h * size, sizeof(float) * size);
        std::memcpy(values + own, v.as<float>() + n * model + h * size, sizeof(float) * size);
      }
    if (rows > 0) locate(0, 0, key_rows, value_rows);
    for (int64_t pair = 0; pair < rows * heads; ++pair) {
      const int64_t n = pair / heads, h = pair % heads;
      if (pair + 1 < rows * heads) {
        locate((pair + 1) / heads, (pair + 1) % heads, next_keys, next_values);
        for (int64_t t = 0; t < total; ++t)
          for (int64_t line = 0; line < size; line += 16) {
            __builtin_prefetch(next_keys[t] + line);
            __builtin_prefetch(next_values[t] + line);
          }
      }
      attend_row(q.as<float>() + n * model + h * size, key_rows.data(), value_rows.data(),
                 allowed ? allowed + n * total : nullptr, total, scale, scores.data(),
                 out.as<float>() + n * model + h * size, size);
      key_rows.swap(next_keys);
      value_rows.swap(next_values);
    }
  }
};

// MultiHeadAttention as our graphs use it: query [B, L, D]; key/value [B, S, D] or [B, H, S, K];
// no bias; key_padding_mask [B, S] int32 (1 = a real token). Output [B, L, D].
struct SourceAttention {
  static constexpr const char* NAME = "MultiHeadAttention";
  // query key value bias key_padding_mask
  static constexpr int INPUTS[] = {TENSOR_FLOAT, TENSOR_FLOAT, TENSOR_FLOAT, TENSOR_FLOAT, TENSOR_INT32};
  static constexpr size_t REQUIRED_INPUTS = 1, OUTPUTS = 1;
  Attributes attributes;

  void compute(OrtKernelContext* context) {
    const std::vector<Tensor> in = inputs(context, 5);
    const Tensor &q = in[0], &k = in[1], &v = in[2], &bias = in[3], &mask = in[4];
    require(!bias.present && q.shape.size() == 3 && k.present && v.present,
            "MultiHeadAttention: this kernel takes query [B, L, D], separate key and value, and no bias");
    const int64_t batch = q.dim(0), length = q.dim(1), model = q.dim(2), heads = attributes.heads;
    const int64_t size = model / heads;
    const bool split_heads = k.shape.size() == 4;  // [B, H, S, K] rather than [B, S, D]
    require(heads > 0 && model % heads == 0 && k.shape == v.shape && k.dim(0) == batch &&
                (split_heads ? k.dim(1) == heads && k.dim(3) == size : k.shape.size() == 3 && k.dim(2) == model),
            "MultiHeadAttention: key/value shapes do not match the query");
    const int64_t source = split_heads ? k.dim(2) : k.dim(1);
    require(!mask.present || (mask.shape.size() == 2 && mask.dim(0) == batch && mask.dim(1) == source),
            "MultiHeadAttention: this kernel takes a key padding mask [B, S] only");
    Tensor out = output(context, 0, {batch, length, model});
    const float scale = attributes.scale != 0.0f ? attributes.scale : 1.0f / std::sqrt(float(size));
    const float* keys = k.as<float>();
    const float* values = v.as<float>();
    std::vector<float> scores(source);
    std::vector<const float*> key_rows(source), value_rows(source);

    for (int64_t b = 0; b < batch; ++b) {
      const int32_t* row_mask = mask.present ? mask.as<int32_t>() + b * source : nullptr;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = split_heads ? (b * heads + h) * source * size : b * source * model + h * size;
        const int64_t stride = split_heads ? size : model;
        for (int64_t t = 0; t < source; ++t) {
          key_rows[t] = keys + base + t * stride;
          value_rows[t] = values + base + t * stride;
        }
        for (int64_t l = 0; l < length; ++l) {
          const int64_t at = (b * length + l) * model + h * size;
          attend_row(q.as<float>() + at, key_rows.data(), value_rows.data(), row_mask, source, scale,
                     scores.data(), out.as<float>() + at, size);
        }
      }
    }
  }
};

// --- registration -------------------------------------------------------------------------------------

// A failure is thrown as std::runtime_error: ONNX Runtime (C++ with exceptions, the same libstdc++) catches it
// around the kernel and fails the run with its message, as it does for its own kernels.
template <typename Kernel>
void compute(void* kernel, OrtKernelContext* context) {
  try {
    static_cast<Kernel*>(kernel)->compute(context);
  } catch (const Failure& failure) {
    throw std::runtime_error("translator attention kernel: " + failure.message);
  }
}

template <typename Kernel>
void* create(const OrtCustomOp*, const OrtApiTable*, const OrtKernelInfo* info) {
  try {
    return new Kernel{read_attributes(info)};
  } catch (const Failure& failure) {
    throw std::runtime_error("translator attention kernel: " + failure.message);
  }
}

template <typename Kernel>
void destroy(void* kernel) { delete static_cast<Kernel*>(kernel); }

// The custom-op description of a kernel, from its NAME, INPUTS (element types, in order), REQUIRED_INPUTS (how many
// leading inputs a node must give) and OUTPUTS (how many; all float, the first required).
template <typename Kernel>
OrtCustomOp describe() {
  OrtCustomOp op{};
  op.version = ORT_API_VERSION_USED;
  op.CreateKernel = create<Kernel>;
  op.GetName = [](const OrtCustomOp*) { return Kernel::NAME; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) { return "CPUExecutionProvider"; };
  op.GetInputType = [](const OrtCustomOp*, size_t i) { return Kernel::INPUTS[i]; };
  op.GetInputTypeCount = [](const OrtCustomOp*) { return sizeof(Kernel::INPUTS) / sizeof(int); };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return int(TENSOR_FLOAT); };
  op.GetOutputTypeCount = [](const OrtCustomOp*) { return Kernel::OUTPUTS; };
  op.KernelCompute = compute<Kernel>;
  op.KernelDestroy = destroy<Kernel>;
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t i) {
    return i < Kernel::REQUIRED_INPUTS ? int(REQUIRED) : int(OPTIONAL);
  };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t i) { return i == 0 ? int(REQUIRED) : int(OPTIONAL); };
  return op;
}

OrtCustomOp SELF_ATTENTION = describe<CachedSelfAttention>();
OrtCustomOp SOURCE_ATTENTION = describe<SourceAttention>();

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                               const OrtApiBase* base) {
  api = base->GetApi(ORT_API_VERSION_USED);
  if (!api) return nullptr;  // cannot happen with any onnxruntime that has custom ops; nothing registered
  // A domain per session options, never released: ONNX Runtime needs it for as long as any session made with these
  // options lives, and sessions are made a few times per process (one per model and worker).
  OrtCustomOpDomain* domain = nullptr;
  Status status = entry<Status (*)(const char*, OrtCustomOpDomain**)>(CREATE_CUSTOM_OP_DOMAIN)("com.microsoft", &domain);
  if (status) return status;
  for (const OrtCustomOp* op : {&SELF_ATTENTION, &SOURCE_ATTENTION}) {
    status = entry<Status (*)(OrtCustomOpDomain*, const OrtCustomOp*)>(CUSTOM_OP_DOMAIN_ADD)(domain, op);
    if (status) return status;
  }
  return entry<Status (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(ADD_CUSTOM_OP_DOMAIN)(options, domain);
}
