// A decode step of a Llama-family model on CPU, every block in one call.
//
// Built and loaded by cpu_decode.py (see its docstring for when it runs). The weight matmuls
// are torch's own kernels (the same ones the eager path calls); what this file replaces is
// everything between them: the RMSNorms, the rotation, the K/V stores, attention over the
// cache, the activation and the residual adds, which in eager torch are some twenty separate
// calls per layer, each costing more in dispatch than in arithmetic for a single row.
//
// Numerics follow the eager path step by step: activations are rounded to the model's dtype
// wherever the eager path holds them in it (after each norm, projection, rotation, activation
// and residual add), and attention runs in float32, as the eager decode path does.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {

// How a projection's weight is held, as cpu_decode.py hands it over.
enum Kind : int64_t {
  kLinear = 0,  // float matrix, at::linear
  kMv = 1,      // float matrix, at::mv for a single row (the policy measured it faster)
  kInt8 = 2,    // at::_weight_int8pack_mm (bfloat16 activations)
  kInt4 = 3,    // at::_weight_int4pack_mm_for_cpu (bfloat16 activations)
};

struct Projection {
  int64_t kind = kLinear;
  at::Tensor a;  // the matrix, or the packed weight
  at::Tensor b;  // int8 scales, or int4's scale-and-zero table; undefined for floats
  at::Tensor bias;  // undefined when none
  int64_t group = 0;
  int64_t out_features = 0;

  // (rows, in) in the model dtype -> (rows, out_features) in the model dtype, contiguous.
  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor out;
    switch (kind) {
      case kMv:
        if (x.size(0) == 1) {  // as eager `linear` does: mv, or addmv with a bias
          out = bias.defined() ? at::addmv(bias, a, x[0]) : at::mv(a, x[0]);
          return out.unsqueeze(0).contiguous();
        }
        out = at::linear(x, a);
        break;
      case kInt8:
        out = at::_weight_int8pack_mm(x.to(at::kBFloat16), a, b).to(x.scalar_type());
        break;
      case kInt4: {
        out = at::_weight_int4pack_mm_for_cpu(x.to(at::kBFloat16), a, group, b);
        if (out.size(1) != out_features) out = out.narrow(1, 0, out_features);
        out = out.to(x.scalar_type());
        break;
      }
      default:
        out = at::linear(x, a);
    }
    if (bias.defined()) out = out + bias;
    return out.contiguous();
  }
};

struct Layer {
  at::Tensor input_norm, post_norm, q_norm, k_norm;  // q/k norms undefined unless Qwen3
  int64_t window = -1;  // sliding window, -1: none
  Projection qkv, o, gate_up, down;
};

at::Tensor optional_tensor(const at::Tensor& t) { return t.numel() ? t : at::Tensor(); }

template <typename T>
inline float widen(T v) {
  return static_cast<float>(v);
}

// The value `v` takes once held in T (a no-op for float).
template <typename T>
inline float hold(float v) {
  return static_cast<float>(static_cast<T>(v));
}

// Sums in eight independent lanes, so the compiler can keep them in one vector register (a
// single running float sum is a serial chain it may not reorder).
constexpr int64_t kLanes = 8;

// Fewest keys an attention job takes (below this, splitting costs more than it saves).
constexpr int64_t kMinChunk = 256;

template <typename T>
inline float dot(const float* a, const T* b, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += a[i + j] * widen(b[i + j]);
  float total = 0.f;
  for (; i < n; ++i) total += a[i] * widen(b[i]);
  for (int64_t j = 0; j < kLanes; ++j) total += lanes[j];
  return total;
}

template <typename T>
inline float sum_of_squares(const T* x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const float v = widen(x[i + j]);
      lanes[j] += v * v;
    }
  float total = 0.f;
  for (; i < n; ++i) total += widen(x[i]) * widen(x[i]);
  for (int64_t j = 0; j < kLanes; ++j) total += lanes[j];
  return total;
}

// RMSNorm of one row of `width`, as the eager RMSNorm computes it for dtype T:
// normalised in float32, rounded to T, then multiplied by the gain in T.
template <typename T>
void rms_norm_row(const T* x, const T* gain, T* out, int64_t width, float eps) {
  const float sum = sum_of_squares(x, width);
  float scale = 1.f / std::sqrt(sum / static_cast<float>(width) + eps);
  for (int64_t i = 0; i < width; ++i) {
    out[i] = static_cast<T>(hold<T>(widen(x[i]) * scale) * widen(gain[i]));
  }
}

// float32 models: one fused op in eager torch, no intermediate rounding.
template <>
void rms_norm_row<float>(const float* x, const float* gain, float* out, int64_t width, float eps) {
  const float sum = sum_of_squares(x, width);
  float scale = 1.f / std::sqrt(sum / static_cast<float>(width) + eps);
  for (int64_t i = 0; i < width; ++i) out[i] = x[i] * scale * gain[i];
}

// Rotate one head in place ("rotate half"): each product and sum rounded to T, as eager does.
template <typename T>
void rotate_head(T* h, const T* cos, const T* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    float x1 = widen(h[i]), x2 = widen(h[i + half]);
    float c = widen(cos[i]), s = widen(sin[i]);
    float a = hold<T>(hold<T>(x1 * c) - hold<T>(x2 * s));
    float b = hold<T>(hold<T>(x2 * c) + hold<T>(x1 * s));
    h[i] = static_cast<T>(a);
    h[i + half] = static_cast<T>(b);
  }
}

class DecodeStack : public torch::CustomClassHolder {
 public:
  DecodeStack(int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim, double eps)
      : hidden_(hidden), heads_(heads), kv_heads_(kv_heads), head_dim_(head_dim), eps_(eps) {}

  void add_layer(at::Tensor input_norm, at::Tensor post_norm, at::Tensor q_norm,
                 at::Tensor k_norm, int64_t window) {
    Layer layer;
    layer.input_norm = input_norm.contiguous();
    layer.post_norm = post_norm.contiguous();
    layer.q_norm = optional_tensor(q_norm);
    layer.k_norm = optional_tensor(k_norm);
    layer.window = window;
    layers_.push_back(std::move(layer));
  }

  // `which`: 0 qkv, 1 o, 2 gate_up, 3 down, of layer `index`.
  void set_projection(int64_t index, int64_t which, int64_t kind, at::Tensor a, at::Tensor b,
                      at::Tensor bias, int64_t group, int64_t out_features) {
    TORCH_CHECK(index >= 0 && index < static_cast<int64_t>(layers_.size()), "no layer ", index);
    Layer& layer = layers_[index];
    Projection* p = which == 0 ? &layer.qkv
                    : which == 1 ? &layer.o
                    : which == 2 ? &layer.gate_up
                                 : &layer.down;
    p->kind = kind;
    p->a = a;
    p->b = optional_tensor(b);
    p->bias = optional_tensor(bias);
    p->group = group;
    p->out_features = out_features;
  }

  void set_final_norm(at::Tensor gain) { final_norm_ = gain.contiguous(); }

  // The caches each step attends over: per layer, K and V viewed as (rows, kv_heads, head_dim)
  // with the last dimension contiguous (any row and head strides).
  // Empty lists let go of the caches bound before.
  void bind_caches(std::vector<at::Tensor> keys, std::vector<at::Tensor> values) {
    if (keys.empty() && values.empty()) {
      keys_.clear();
      values_.clear();
      return;
    }
    TORCH_CHECK(keys.size() == layers_.size() && values.size() == layers_.size(),
                "one K and one V cache per layer");
    for (size_t i = 0; i < keys.size(); ++i) {
      TORCH_CHECK(keys[i].dim() == 3 && keys[i].stride(2) == 1 && values[i].dim() == 3 &&
                      values[i].stride(2) == 1 && keys[i].strides() == values[i].strides(),
                  "K/V caches must be (rows, kv_heads, head_dim) views with contiguous rows");
    }
    keys_ = std::move(keys);
    values_ = std::move(values);
  }

  // One decode step of `n` sequences, one new token each.
  //   x: (n, hidden) embeddings in the model dtype; rope: (n, 2, head_dim / 2) cos and sin.
  //   store_rows: (n,) cache row of each new token's K/V.
  //   key_start, key_len: (n,) sequence r's keys t < key_len[r] are at rows key_start[r] + t,
  //     or, when block_table (n, blocks) is not empty, at rows
  //     block_table[r][t / block_size] * block_size + t % block_size (key_start unused).
  // Returns (n, hidden), after the final norm.
  at::Tensor step(at::Tensor x, at::Tensor rope, at::Tensor store_rows, at::Tensor key_start,
                  at::Tensor key_len, at::Tensor block_table, int64_t block_size) {
    TORCH_CHECK(keys_.size() == layers_.size(), "bind_caches first");
    TORCH_CHECK(x.dim() == 2 && x.size(1) == hidden_, "x must be (n, hidden)");
    auto dtype = x.scalar_type();
    TORCH_CHECK(dtype == keys_[0].scalar_type(), "x and the caches must share a dtype");
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "cortex_decode_step", [&] {
      out = run<scalar_t>(x.contiguous(), rope.to(dtype).contiguous(), store_rows, key_start,
                          key_len, block_table, block_size);
    });
    return out;
  }

 private:
  template <typename T>
  at::Tensor run(at::Tensor x, const at::Tensor& rope, const at::Tensor& store_rows,
                 const at::Tensor& key_start, const at::Tensor& key_len,
                 const at::Tensor& block_table, int64_t block_size) {
    const int64_t n = x.size(0), d = head_dim_, half = d / 2;
    const float eps = static_cast<float>(eps_);
    auto store = store_rows.to(at::kLong).contiguous();
    auto starts = key_start.to(at::kLong).contiguous();
    auto lengths = key_len.to(at::kLong).contiguous();
    at::Tensor table = block_table.numel() ? block_table.to(at::kLong).contiguous() : at::Tensor();
    const int64_t* store_p = store.data_ptr<int64_t>();
    const int64_t* start_p = starts.data_ptr<int64_t>();
    const int64_t* len_p = lengths.data_ptr<int64_t>();
    const int64_t* table_p = table.defined() ? table.data_ptr<int64_t>() : nullptr;
    const int64_t table_width = table.defined() ? table.size(1) : 0;
    TORCH_CHECK(!table_p || block_size > 0, "a block table needs a block size");
    // Every sequence's key rows, worked out once for all layers: rows[offset[r] + t] is the
    // cache row of key t of sequence r.
    std::vector<int64_t> offset(n + 1, 0);
    for (int64_t r = 0; r < n; ++r) offset[r + 1] = offset[r] + len_p[r];
    std::vector<int64_t> rows(offset[n]);
    for (int64_t r = 0; r < n; ++r) {
      int64_t* own = rows.data() + offset[r];
      for (int64_t t = 0; t < len_p[r]; ++t) {
        own[t] = table_p ? table_p[r * table_width + t / block_size] * block_size + t % block_size
                         : start_p[r] + t;
      }
    }
    const T* rope_p = rope.data_ptr<T>();

    x = x.clone();  // the residual stream, updated in place
    T* x_p = x.data_ptr<T>();
    auto normed = at::empty_like(x);
    T* normed_p = normed.data_ptr<T>();
    const int64_t q_width = heads_ * d, kv_width = kv_heads_ * d;
    auto attended = at::empty({n, q_width}, x.options());
    T* att_p = attended.data_ptr<T>();
    const float scale = 1.f / std::sqrt(static_cast<float>(d));
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t group = heads_ / kv_heads_;

    for (size_t li = 0; li < layers_.size(); ++li) {
      const Layer& layer = layers_[li];
      for (int64_t r = 0; r < n; ++r)
        rms_norm_row<T>(x_p + r * hidden_, layer.input_norm.data_ptr<T>(), normed_p + r * hidden_,
                        hidden_, eps);
      at::Tensor qkv = layer.qkv(normed);  // (n, q + 2 kv widths), contiguous
      T* qkv_p = qkv.data_ptr<T>();
      const int64_t qkv_stride = qkv.size(1);

      // Per head: the Qwen3 norm, then the rotation; then store this token's K and V.
      const at::Tensor& kc = keys_[li];
      const at::Tensor& vc = values_[li];
      const int64_t row_stride = kc.stride(0), head_stride = kc.stride(1);
      T* k_base = kc.data_ptr<T>();
      T* v_base = vc.data_ptr<T>();
      for (int64_t r = 0; r < n; ++r) {
        T* row = qkv_p + r * qkv_stride;
        const T* cos = rope_p + r * d;
        const T* sin = cos + half;
        for (int64_t h = 0; h < heads_ + kv_heads_; ++h) {
          T* head = row + h * d;
          if (layer.q_norm.defined()) {
            const at::Tensor& gain = h < heads_ ? layer.q_norm : layer.k_norm;
            rms_norm_row<T>(head, gain.data_ptr<T>(), head, d, eps);
          }
          rotate_head<T>(head, cos, sin, half);
        }
        T* k_dst = k_base + store_p[r] * row_stride;
        T* v_dst = v_base + store_p[r] * row_stride;
        for (int64_t h = 0; h < kv_heads_; ++h) {
          const T* k_src = row + q_width + h * d;
          const T* v_src = row + q_width + kv_width + h * d;
          std::copy(k_src, k_src + d, k_dst + h * head_stride);
          std::copy(v_src, v_src + d, v_dst + h * head_stride);
        }
      }

      // Attention in float32, split along the keys (flash-decoding): a job is one chunk of
      // one sequence's keys for every head, reading each cache row (all KV heads) once, in
      // order; the chunks' partial softmax sums are merged afterwards. Long contexts thus
      // spread over the threads whatever the batch and head count.
      const int64_t window = layer.window;
      std::vector<int64_t> job_seq, job_lo, job_hi;
      for (int64_t r = 0; r < n; ++r) {
        const int64_t length = len_p[r];
        const int64_t first = (window > 0 && length > window) ? length - window : 0;
        const int64_t chunk = std::max<int64_t>(kMinChunk, (length - first + threads - 1) / threads);
        for (int64_t lo = first; lo < length; lo += chunk) {
          job_seq.push_back(r);
          job_lo.push_back(lo);
          job_hi.push_back(std::min(length, lo + chunk));
        }
      }
      const int64_t jobs = static_cast<int64_t>(job_seq.size());
      const int64_t part = heads_ * (d + 2);  // per job and head: max, sum, d weighted values
      std::vector<float> partial(jobs * part);
      auto attend = [&](int64_t begin, int64_t end) {
        std::vector<float> q(heads_ * d), row(d), scores;
        for (int64_t job = begin; job < end; ++job) {
          const int64_t r = job_seq[job], lo = job_lo[job], hi = job_hi[job], span = hi - lo;
          const int64_t* own_rows = rows.data() + offset[r];
          const T* q_src = qkv_p + r * qkv_stride;
          for (int64_t i = 0; i < heads_ * d; ++i) q[i] = widen(q_src[i]);
          float* best = partial.data() + job * part;  // heads_ maxima, heads_ sums, then values
          float* total = best + heads_;
          float* acc = total + heads_;
          std::fill(best, best + heads_, -INFINITY);
          std::fill(total, total + heads_ + heads_ * d, 0.f);
          scores.resize(heads_ * span);
          for (int64_t t = lo; t < hi; ++t) {
            const T* k_row = k_base + own_rows[t] * row_stride;
            for (int64_t g = 0; g < kv_heads_; ++g) {
              const T* k = k_row + g * head_stride;
              for (int64_t i = 0; i < d; ++i) row[i] = widen(k[i]);
              for (int64_t h = g * group; h < (g + 1) * group; ++h) {
                const float score = dot(q.data() + h * d, row.data(), d) * scale;
                scores[h * span + t - lo] = score;
                best[h] = std::max(best[h], score);
              }
            }
          }
          for (int64_t t = lo; t < hi; ++t) {
            const T* v_row = v_base + own_rows[t] * row_stride;
            for (int64_t g = 0; g < kv_heads_; ++g) {
              const T* v = v_row + g * head_stride;
              for (int64_t i = 0; i < d; ++i) row[i] = widen(v[i]);
              for (int64_t h = g * group; h < (g + 1) * group; ++h) {
                const float p = std::exp(scores[h * span + t - lo] - best[h]);
                total[h] += p;
                float* out = acc + h * d;
                for (int64_t i = 0; i < d; ++i) out[i] += p * row[i];
              }
            }
          }
        }
      };
      at::parallel_for(0, jobs, 1, attend);
      // Merge each sequence's chunks: rescale every chunk's sums to the overall maximum.
      std::vector<float> merged(d);
      for (int64_t job = 0; job < jobs;) {
        const int64_t r = job_seq[job];
        int64_t stop = job;
        while (stop < jobs && job_seq[stop] == r) ++stop;
        for (int64_t h = 0; h < heads_; ++h) {
          float top = -INFINITY;
          for (int64_t j = job; j < stop; ++j) top = std::max(top, partial[j * part + h]);
          float total = 0.f;
          std::fill(merged.begin(), merged.end(), 0.f);
          for (int64_t j = job; j < stop; ++j) {
            const float* base = partial.data() + j * part;
            const float weight = std::exp(base[h] - top);
            total += weight * base[heads_ + h];
            const float* values = base + 2 * heads_ + h * d;
            for (int64_t i = 0; i < d; ++i) merged[i] += weight * values[i];
          }
          T* dst = att_p + r * q_width + h * d;
          const float inv = 1.f / total;
          for (int64_t i = 0; i < d; ++i) dst[i] = static_cast<T>(merged[i] * inv);
        }
        job = stop;
      }

      at::Tensor o = layer.o(attended);
      const T* o_p = o.data_ptr<T>();
      for (int64_t i = 0; i < n * hidden_; ++i) x_p[i] = static_cast<T>(widen(x_p[i]) + widen(o_p[i]));

      for (int64_t r = 0; r < n; ++r)
        rms_norm_row<T>(x_p + r * hidden_, layer.post_norm.data_ptr<T>(), normed_p + r * hidden_,
                        hidden_, eps);
      at::Tensor gate_up = layer.gate_up(normed);
      const int64_t width = gate_up.size(1) / 2;
      auto act = at::empty({n, width}, x.options());
      T* act_p = act.data_ptr<T>();
      const T* gu_p = gate_up.data_ptr<T>();
      for (int64_t r = 0; r < n; ++r) {
        const T* gate = gu_p + r * 2 * width;
        const T* up = gate + width;
        T* dst = act_p + r * width;
        for (int64_t i = 0; i < width; ++i) {
          const float g = widen(gate[i]);
          dst[i] = static_cast<T>(hold<T>(g / (1.f + std::exp(-g))) * widen(up[i]));
        }
      }
      at::Tensor down = layer.down(act);
      const T* down_p = down.data_ptr<T>();
      for (int64_t i = 0; i < n * hidden_; ++i)
        x_p[i] = static_cast<T>(widen(x_p[i]) + widen(down_p[i]));
    }
    for (int64_t r = 0; r < n; ++r)
      rms_norm_row<T>(x_p + r * hidden_, final_norm_.data_ptr<T>(), normed_p + r * hidden_,
                      hidden_, eps);
    return normed;
  }

  int64_t hidden_, heads_, kv_heads_, head_dim_;
  double eps_;
  std::vector<Layer> layers_;
  at::Tensor final_norm_;
  std::vector<at::Tensor> keys_, values_;
};

}  // namespace

TORCH_LIBRARY(cortex_cpu, m) {
  m.class_<DecodeStack>("DecodeStack")
      .def(torch::init<int64_t, int64_t, int64_t, int64_t, double>())
      .def("add_layer", &DecodeStack::add_layer)
      .def("set_projection", &DecodeStack::set_projection)
      .def("set_final_norm", &DecodeStack::set_final_norm)
      .def("bind_caches", &DecodeStack::bind_caches)
      .def("step", &DecodeStack::step);
}
