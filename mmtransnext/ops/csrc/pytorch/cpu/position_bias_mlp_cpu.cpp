// The continuous position bias MLP, fc2(relu(fc1(coords))), fused on the CPU.
//
// The MLP runs on every distinct relative offset (about 60k for stage 1 at img_size 512, 160k at
// 800), with a 512-wide hidden layer: through nn.Linear that is a (T, 512) activation written to
// memory, re-read and kept for backward in every block. Here each offset's hidden layer lives in
// registers / L1 only: one vectorised loop over the hidden units per offset, forward and (recomputed)
// backward. fc1 has 2 inputs and fc2 a few heads, so BLAS on blocks of offsets would be bound by its
// per-call overhead and skinny shapes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../common/cpu_vectorize.h"
#include "../position_bias_mlp.h"

namespace mmtransnext {
namespace {

constexpr int64_t kRows = 1024;  // offsets per backward partial sum (fixed: results independent of threads)

// fc1 split by input column, so that the loops over hidden units read contiguous weights.
template <typename T>
struct Mlp {
  std::vector<T> w1_x, w1_y;
  const T *b1, *w2, *b2;
  int64_t hidden, heads;

  Mlp(const at::Tensor& w1, const at::Tensor& b1_, const at::Tensor& w2_, const T* b2_)
      : b1(b1_.data_ptr<T>()), w2(w2_.data_ptr<T>()), b2(b2_), hidden(w1.size(0)), heads(w2_.size(0)) {
    const T* w = w1.data_ptr<T>();
    for (int64_t j = 0; j < hidden; ++j) {
      w1_x.push_back(w[2 * j]);
      w1_y.push_back(w[2 * j + 1]);
    }
  }
};

// hidden = relu(w1 . c + b1) for one offset c = (cx, cy).
template <typename T>
MMTN_INLINE void hidden_layer(const Mlp<T>& m, T cx, T cy, T* hidden) {
  const T *wx = m.w1_x.data(), *wy = m.w1_y.data();
#pragma omp simd
  for (int64_t j = 0; j < m.hidden; ++j) {
    const T pre = wx[j] * cx + wy[j] * cy + m.b1[j];
    hidden[j] = pre > T(0) ? pre : T(0);
  }
}

// out[k, r] = b2[k] + sum_j w2[k, j] relu(w1[j] . c_r + b1[j]) for rows [begin, end).
template <typename T>
MMTN_INLINE void forward_rows_impl(const T* coords, const Mlp<T>& m, T* out, int64_t rows, int64_t begin, int64_t end,
                                   T* hidden) {
  for (int64_t r = begin; r < end; ++r) {
    hidden_layer(m, coords[2 * r], coords[2 * r + 1], hidden);
    for (int64_t k = 0; k < m.heads; ++k) {
      const T* w = m.w2 + k * m.hidden;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < m.hidden; ++j) acc += w[j] * hidden[j];
      out[k * rows + r] = acc + m.b2[k];
    }
  }
}

// Adds the weight gradients of rows [begin, end) to the partial sums (w1 by column, b1, w2, b2). Four
// offsets at a time, one vector of hidden units at a time, so that each w2 / acc_w2 element is read and
// written once per four offsets instead of once per offset (the loop was bound by those memory accesses).
template <typename T>
MMTN_INLINE void backward_rows_impl(const T* grad, const T* coords, const Mlp<T>& m, int64_t rows, int64_t begin,
                                    int64_t end, T* acc_w1x, T* acc_w1y, T* acc_b1, T* acc_w2, T* acc_b2, T* hidden,
                                    T* grad_pre) {
  constexpr int R = 4, J = 16;
  const T *wx = m.w1_x.data(), *wy = m.w1_y.data();
  int64_t r0 = begin;
  for (; r0 + R <= end && m.hidden % J == 0; r0 += R) {
    T cx[R], cy[R], g[R];
    for (int r = 0; r < R; ++r) cx[r] = coords[2 * (r0 + r)], cy[r] = coords[2 * (r0 + r) + 1];
    for (int64_t k = 0; k < m.heads; ++k) {
      for (int r = 0; r < R; ++r) acc_b2[k] += grad[k * rows + r0 + r];
    }
    for (int64_t j0 = 0; j0 < m.hidden; j0 += J) {
      T h[R][J], gp[R][J];
      for (int r = 0; r < R; ++r) {
#pragma omp simd
        for (int j = 0; j < J; ++j) {
          const T pre = wx[j0 + j] * cx[r] + wy[j0 + j] * cy[r] + m.b1[j0 + j];
          h[r][j] = pre > T(0) ? pre : T(0);
          gp[r][j] = 0;
        }
      }
      for (int64_t k = 0; k < m.heads; ++k) {
        const T* w = m.w2 + k * m.hidden + j0;
        T* aw = acc_w2 + k * m.hidden + j0;
        for (int r = 0; r < R; ++r) g[r] = grad[k * rows + r0 + r];
#pragma omp simd
        for (int j = 0; j < J; ++j) {
          T a = aw[j];
          for (int r = 0; r < R; ++r) {
            a += g[r] * h[r][j];
            gp[r][j] += g[r] * w[j];
          }
          aw[j] = a;
        }
      }
#pragma omp simd
      for (int j = 0; j < J; ++j) {
        T db1 = acc_b1[j0 + j], dx = acc_w1x[j0 + j], dy = acc_w1y[j0 + j];
        for (int r = 0; r < R; ++r) {
          const T d = h[r][j] > T(0) ? gp[r][j] : T(0);
          db1 += d;
          dx += d * cx[r];
          dy += d * cy[r];
        }
        acc_b1[j0 + j] = db1, acc_w1x[j0 + j] = dx, acc_w1y[j0 + j] = dy;
      }
    }
  }
  for (int64_t r = r0; r < end; ++r) {  // the last rows one at a time
    const T cx = coords[2 * r], cy = coords[2 * r + 1];
    hidden_layer(m, cx, cy, hidden);
    std::fill(grad_pre, grad_pre + m.hidden, T(0));
    for (int64_t k = 0; k < m.heads; ++k) {
      const T g = grad[k * rows + r];
      const T* w = m.w2 + k * m.hidden;
      T* aw = acc_w2 + k * m.hidden;
      acc_b2[k] += g;
#pragma omp simd
      for (int64_t j = 0; j < m.hidden; ++j) {
        aw[j] += g * hidden[j];
        grad_pre[j] += g * w[j];
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < m.hidden; ++j) {
      const T d = hidden[j] > T(0) ? grad_pre[j] : T(0);
      acc_b1[j] += d;
      acc_w1x[j] += d * cx;
      acc_w1y[j] += d * cy;
    }
  }
}

MMTN_VECTOR_CLONES void forward_rows(const float* c, const Mlp<float>& m, float* out, int64_t rows, int64_t begin,
                                     int64_t end, float* hidden) {
  forward_rows_impl(c, m, out, rows, begin, end, hidden);
}
void forward_rows(const double* c, const Mlp<double>& m, double* out, int64_t rows, int64_t begin, int64_t end,
                  double* hidden) {
  forward_rows_impl(c, m, out, rows, begin, end, hidden);
}
MMTN_VECTOR_CLONES void backward_rows(const float* g, const float* c, const Mlp<float>& m, int64_t rows, int64_t begin,
                                      int64_t end, float* w1x, float* w1y, float* b1, float* w2, float* b2,
                                      float* hidden, float* grad_pre) {
  backward_rows_impl(g, c, m, rows, begin, end, w1x, w1y, b1, w2, b2, hidden, grad_pre);
}
void backward_rows(const double* g, const double* c, const Mlp<double>& m, int64_t rows, int64_t begin, int64_t end,
                   double* w1x, double* w1y, double* b1, double* w2, double* b2, double* hidden, double* grad_pre) {
  backward_rows_impl(g, c, m, rows, begin, end, w1x, w1y, b1, w2, b2, hidden, grad_pre);
}

template <typename T>
void forward(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
             const at::Tensor& b2, at::Tensor& out) {
  const Mlp<T> m(w1, b1, w2, b2.data_ptr<T>());
  const int64_t rows = coords.size(0);
  const T* c = coords.data_ptr<T>();
  T* o = out.data_ptr<T>();
  at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    std::vector<T> hidden(m.hidden);
    forward_rows(c, m, o, rows, begin, end, hidden.data());
  });
}

template <typename T>
void backward(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
              const at::Tensor& w2, at::Tensor& grad_w1, at::Tensor& grad_b1, at::Tensor& grad_w2,
              at::Tensor& grad_b2) {
  const Mlp<T> m(w1, b1, w2, nullptr);
  const int64_t rows = coords.size(0), H = m.hidden, K = m.heads;
  const int64_t chunks = (rows + kRows - 1) / kRows, width = 3 * H + K * H + K;  // w1 x, w1 y, b1, w2, b2
  std::vector<T> partial(chunks * width, T(0));
  const T *g = grad.data_ptr<T>(), *c = coords.data_ptr<T>();
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<T> hidden(H), grad_pre(H);
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      T* p = partial.data() + chunk * width;
      backward_rows(g, c, m, rows, chunk * kRows, std::min(rows, (chunk + 1) * kRows), p, p + H, p + 2 * H, p + 3 * H,
                    p + 3 * H + K * H, hidden.data(), grad_pre.data());
    }
  });
  // the chunks' partial sums, added in chunk order in double
  std::vector<double> total(width, 0.0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    for (int64_t i = 0; i < width; ++i) total[i] += partial[chunk * width + i];
  T *gw1 = grad_w1.data_ptr<T>(), *gb1 = grad_b1.data_ptr<T>(), *gw2 = grad_w2.data_ptr<T>();
  T* gb2 = grad_b2.data_ptr<T>();
  for (int64_t j = 0; j < H; ++j) {
    gw1[2 * j] = static_cast<T>(total[j]);
    gw1[2 * j + 1] = static_cast<T>(total[H + j]);
    gb1[j] = static_cast<T>(total[2 * H + j]);
  }
  for (int64_t i = 0; i < K * H; ++i) gw2[i] = static_cast<T>(total[3 * H + i]);
  for (int64_t k = 0; k < K; ++k) gb2[k] = static_cast<T>(total[3 * H + K * H + k]);
}

}  // namespace

void position_bias_mlp_forward_cpu(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(coords.scalar_type(), "position_bias_mlp_forward_cpu",
                             [&] { forward<scalar_t>(coords, w1, b1, w2, b2, out); });
}

void position_bias_mlp_backward_cpu(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& w1,
                                    const at::Tensor& b1, const at::Tensor& w2, at::Tensor& grad_w1,
                                    at::Tensor& grad_b1, at::Tensor& grad_w2, at::Tensor& grad_b2) {
  AT_DISPATCH_FLOATING_TYPES(coords.scalar_type(), "position_bias_mlp_backward_cpu",
                             [&] { backward<scalar_t>(grad, coords, w1, b1, w2, grad_w1, grad_b1, grad_w2, grad_b2); });
}

}  // namespace mmtransnext
