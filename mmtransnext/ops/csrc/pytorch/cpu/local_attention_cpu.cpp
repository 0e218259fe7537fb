// CPU kernels of the local part of aggregated attention, parallel over (batch, head, pixel).
// Backward passes gather (each output element sums over the pixels that used it), so no two
// threads write the same element.
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

template <typename scalar_t>
void similarity_forward(const scalar_t* query, const scalar_t* key, const scalar_t* bias, scalar_t* attn,
                        int64_t batch_heads, int64_t heads, int64_t dim, const LocalWindow& window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  at::parallel_for(0, batch_heads * N, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t bh = i / N, n = i % N;
      const scalar_t* q = query + i * dim;
      const scalar_t* k_base = key + bh * N * dim;
      const scalar_t* b = bias + (bh % heads) * L;
      for (int64_t l = 0; l < L; ++l) {
        int64_t m;
        if (!window.neighbour(n, l, &m)) {
          attn[i * L + l] = -std::numeric_limits<scalar_t>::infinity();
          continue;
        }
        const scalar_t* k = k_base + m * dim;
        acc_t acc = 0;
        for (int64_t c = 0; c < dim; ++c) acc += static_cast<acc_t>(q[c]) * static_cast<acc_t>(k[c]);
        attn[i * L + l] = static_cast<scalar_t>(acc + static_cast<acc_t>(b[l]));
      }
    }
  });
}

template <typename scalar_t>
void similarity_backward(const scalar_t* grad_attn, const scalar_t* query, const scalar_t* key,
                         scalar_t* grad_query, scalar_t* grad_key, scalar_t* grad_bias, int64_t batch,
                         int64_t heads, int64_t dim, const LocalWindow& window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  at::parallel_for(0, batch * heads * N, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc_q(dim), acc_k(dim);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t base = (i / N) * N, n = i % N;
      std::fill(acc_q.begin(), acc_q.end(), acc_t(0));
      std::fill(acc_k.begin(), acc_k.end(), acc_t(0));
      for (int64_t l = 0; l < L; ++l) {
        int64_t m;
        if (window.neighbour(n, l, &m)) {  // d attn[n, l] / d query[n] = key[m]
          const acc_t g = grad_attn[i * L + l];
          const scalar_t* k = key + (base + m) * dim;
          for (int64_t c = 0; c < dim; ++c) acc_q[c] += g * static_cast<acc_t>(k[c]);
        }
        if (window.source(n, l, &m)) {  // pixel n is neighbour l of pixel m
          const acc_t g = grad_attn[(base + m) * L + l];
          const scalar_t* q = query + (base + m) * dim;
          for (int64_t c = 0; c < dim; ++c) acc_k[c] += g * static_cast<acc_t>(q[c]);
        }
      }
      for (int64_t c = 0; c < dim; ++c) {
        grad_query[i * dim + c] = static_cast<scalar_t>(acc_q[c]);
        grad_key[i * dim + c] = static_cast<scalar_t>(acc_k[c]);
      }
    }
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
  const int64_t N = window.pixels(), L = window.length();
  at::parallel_for(0, batch_heads * N, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(dim);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t base = (i / N) * N, n = i % N;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t l = 0; l < L; ++l) {
        int64_t m;
        if (!window.neighbour(n, l, &m)) continue;
        const acc_t w = weights[i * L + l];
        const scalar_t* v = value + (base + m) * dim;
        for (int64_t c = 0; c < dim; ++c) acc[c] += w * static_cast<acc_t>(v[c]);
      }
      for (int64_t c = 0; c < dim; ++c) out[i * dim + c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

template <typename scalar_t>
void aggregation_backward(const scalar_t* grad_out, const scalar_t* weights, const scalar_t* value,
                          scalar_t* grad_weights, scalar_t* grad_value, int64_t batch_heads, int64_t dim,
                          const LocalWindow& window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  at::parallel_for(0, batch_heads * N, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(dim);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t base = (i / N) * N, n = i % N;
      const scalar_t* g = grad_out + i * dim;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t l = 0; l < L; ++l) {
        int64_t m;
        acc_t dot = 0;
        if (window.neighbour(n, l, &m)) {  // d out[n] / d weights[n, l] = value[m]
          const scalar_t* v = value + (base + m) * dim;
          for (int64_t c = 0; c < dim; ++c) dot += static_cast<acc_t>(g[c]) * static_cast<acc_t>(v[c]);
        }
        grad_weights[i * L + l] = static_cast<scalar_t>(dot);
        if (window.source(n, l, &m)) {  // value[n] is neighbour l of pixel m
          const acc_t w = weights[(base + m) * L + l];
          const scalar_t* gm = grad_out + (base + m) * dim;
          for (int64_t c = 0; c < dim; ++c) acc[c] += w * static_cast<acc_t>(gm[c]);
        }
      }
      for (int64_t c = 0; c < dim; ++c) grad_value[i * dim + c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

}  // namespace

void local_similarity_forward_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                  at::Tensor& attn, const LocalWindow& window) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "local_similarity_forward_cpu", [&] {
    similarity_forward<scalar_t>(query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                                 attn.data_ptr<scalar_t>(), query.size(0) * query.size(1), query.size(1),
                                 query.size(3), window);
  });
}

void local_similarity_backward_cpu(const at::Tensor& grad_attn, const at::Tensor& query, const at::Tensor& key,
                                   at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_bias,
                                   const LocalWindow& window) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "local_similarity_backward_cpu", [&] {
    similarity_backward<scalar_t>(grad_attn.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(),
                                  key.data_ptr<scalar_t>(), grad_query.data_ptr<scalar_t>(),
                                  grad_key.data_ptr<scalar_t>(), grad_bias.data_ptr<scalar_t>(), query.size(0),
                                  query.size(1), query.size(3), window);
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
