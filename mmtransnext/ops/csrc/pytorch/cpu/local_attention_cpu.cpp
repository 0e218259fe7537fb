// CPU kernels of the local part of aggregated attention, parallel over (batch, head, pixel).
// Backward passes gather (each output element sums over the pixels that used it), so no two
// threads write the same element.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../local_attention.h"

namespace mmtransnext {
namespace {

// Pixels per parallel task: large enough to amortise scheduling, small enough to balance.
constexpr int64_t kGrain = 256;

// Calls pixel(i, base, n, scratch) for every pixel i = base + n of every (batch, head) map, in parallel
// tasks; scratch holds scratch_size accumulators, zeroed for each pixel.
template <typename acc_t, typename F>
void for_each_pixel(int64_t batch_heads, const LocalWindow& window, int64_t scratch_size, const F& pixel) {
  const int64_t N = window.pixels();
  at::parallel_for(0, batch_heads * N, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(scratch_size);
    for (int64_t i = begin; i < end; ++i) {
      std::fill(scratch.begin(), scratch.end(), acc_t(0));
      pixel(i, (i / N) * N, i % N, scratch.data());
    }
  });
}

// acc += w * row, over dim channels
template <typename acc_t, typename scalar_t>
inline void add_scaled(acc_t* acc, acc_t w, const scalar_t* row, int64_t dim) {
  for (int64_t c = 0; c < dim; ++c) acc[c] += w * static_cast<acc_t>(row[c]);
}

template <typename acc_t, typename scalar_t>
inline acc_t dot(const scalar_t* a, const scalar_t* b, int64_t dim) {
  acc_t acc = 0;
  for (int64_t c = 0; c < dim; ++c) acc += static_cast<acc_t>(a[c]) * static_cast<acc_t>(b[c]);
  return acc;
}

template <typename acc_t, typename scalar_t>
inline void store(scalar_t* row, const acc_t* acc, int64_t dim) {
  for (int64_t c = 0; c < dim; ++c) row[c] = static_cast<scalar_t>(acc[c]);
}

template <typename scalar_t>
void similarity_forward(const scalar_t* query, const scalar_t* key, const scalar_t* bias, scalar_t* attn,
                        int64_t batch_heads, int64_t heads, int64_t dim, const LocalWindow& window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  for_each_pixel<acc_t>(batch_heads, window, 0, [&](int64_t i, int64_t base, int64_t n, acc_t*) {
    const scalar_t* b = bias + ((base / N) % heads) * L;
    for (int64_t l = 0; l < L; ++l) {
      int64_t m;
      attn[i * L + l] = window.neighbour(n, l, &m)
                            ? static_cast<scalar_t>(dot<acc_t>(query + i * dim, key + (base + m) * dim, dim) +
                                                    static_cast<acc_t>(b[l]))
                            : -std::numeric_limits<scalar_t>::infinity();
    }
  });
}

template <typename scalar_t>
void similarity_backward(const scalar_t* grad_attn, const scalar_t* query, const scalar_t* key, scalar_t* grad_query,
                         scalar_t* grad_key, scalar_t* grad_bias, int64_t batch, int64_t heads, int64_t dim,
                         const LocalWindow& window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  for_each_pixel<acc_t>(batch * heads, window, 2 * dim, [&](int64_t i, int64_t base, int64_t n, acc_t* acc) {
    acc_t *acc_q = acc, *acc_k = acc + dim;
    for (int64_t l = 0; l < L; ++l) {
      int64_t m;
      if (window.neighbour(n, l, &m))  // d attn[n, l] / d query[n] = key[m]
        add_scaled<acc_t>(acc_q, grad_attn[i * L + l], key + (base + m) * dim, dim);
      if (window.source(n, l, &m))  // pixel n is neighbour l of pixel m
        add_scaled<acc_t>(acc_k, grad_attn[(base + m) * L + l], query + (base + m) * dim, dim);
    }
    store(grad_query + i * dim, acc_q, dim);
    store(grad_key + i * dim, acc_k, dim);
  });
  // bias gradient: sum over batch and in-map pixels, one (head, neighbour) per task
  at::parallel_for(0, heads * L, 1, [&](int64_t begin, int64_t end) {
    for (int64_t hl = begin; hl < end; ++hl) {
      const int64_t h = hl / L, l = hl % L;
      acc_t acc = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const scalar_t* g = grad_attn + (b * heads + h) * N * L;
        for (int64_t n = 0; n < N; ++n) {
          int64_t m;
          if (window.neighbour(n, l, &m)) acc += static_cast<acc_t>(g[n * L + l]);
        }
      }
      grad_bias[hl] = static_cast<scalar_t>(acc);
    }
  });
}

template <typename scalar_t>
void aggregation_forward(const scalar_t* weights, const scalar_t* value, scalar_t* out, int64_t batch_heads,
                         int64_t dim, const LocalWindow& window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = window.length();
  for_each_pixel<acc_t>(batch_heads, window, dim, [&](int64_t i, int64_t base, int64_t n, acc_t* acc) {
    for (int64_t l = 0; l < L; ++l) {
      int64_t m;
      if (window.neighbour(n, l, &m)) add_scaled<acc_t>(acc, weights[i * L + l], value + (base + m) * dim, dim);
    }
    store(out + i * dim, acc, dim);
  });
}

template <typename scalar_t>
void aggregation_backward(const scalar_t* grad_out, const scalar_t* weights, const scalar_t* value,
                          scalar_t* grad_weights, scalar_t* grad_value, int64_t batch_heads, int64_t dim,
                          const LocalWindow& window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = window.length();
  for_each_pixel<acc_t>(batch_heads, window, dim, [&](int64_t i, int64_t base, int64_t n, acc_t* acc) {
    for (int64_t l = 0; l < L; ++l) {
      int64_t m;
      const bool inside = window.neighbour(n, l, &m);  // d out[n] / d weights[n, l] = value[m]
      grad_weights[i * L + l] =
          static_cast<scalar_t>(inside ? dot<acc_t>(grad_out + i * dim, value + (base + m) * dim, dim) : acc_t(0));
      if (window.source(n, l, &m))  // value[n] is neighbour l of pixel m
        add_scaled<acc_t>(acc, weights[(base + m) * L + l], grad_out + (base + m) * dim, dim);
    }
    store(grad_value + i * dim, acc, dim);
  });
}

}  // namespace

void local_similarity_forward_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                  at::Tensor& attn, const LocalWindow& window) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "local_similarity_forward_cpu", [&] {
    similarity_forward<scalar_t>(query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                                 attn.data_ptr<scalar_t>(), query.size(0) * query.size(1), query.size(1), query.size(3),
                                 window);
  });
}

void local_similarity_backward_cpu(const at::Tensor& grad_attn, const at::Tensor& query, const at::Tensor& key,
                                   at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_bias,
                                   const LocalWindow& window) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "local_similarity_backward_cpu", [&] {
    similarity_backward<scalar_t>(grad_attn.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(),
                                  grad_query.data_ptr<scalar_t>(), grad_key.data_ptr<scalar_t>(),
                                  grad_bias.data_ptr<scalar_t>(), query.size(0), query.size(1), query.size(3), window);
  });
}

void local_aggregation_forward_cpu(const at::Tensor& weights, const at::Tensor& value, at::Tensor& out,
                                   const LocalWindow& window) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "local_aggregation_forward_cpu", [&] {
    aggregation_forward<scalar_t>(weights.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                  value.size(0) * value.size(1), value.size(3), window);
  });
}

void local_aggregation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& value,
                                    at::Tensor& grad_weights, at::Tensor& grad_value, const LocalWindow& window) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "local_aggregation_backward_cpu", [&] {
    aggregation_backward<scalar_t>(grad_out.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(),
                                   value.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(),
                                   grad_value.data_ptr<scalar_t>(), value.size(0) * value.size(1), value.size(3),
                                   window);
  });
}

}  // namespace mmtransnext
