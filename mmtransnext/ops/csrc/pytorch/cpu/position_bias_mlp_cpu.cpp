// The continuous position bias MLP, fc2(relu(fc1(coords))), fused on the CPU.
//
// The MLP runs on every distinct relative offset (about 60k for stage 1 at img_size 512), with a
// 512-wide hidden layer: through nn.Linear that is a (T, 512) activation written, re-read and kept
// for backward in every block. Here each row's hidden layer lives in a stack buffer and backward
// recomputes it, so the op is compute-bound instead of memory-bound.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../position_bias_mlp.h"

namespace mmtransnext {
namespace {

constexpr int64_t kRowGrain = 64;

// Compiled twice: for AVX2 + FMA CPUs and for any x86-64, picked at load time (GCC / Clang on
// x86 only), so a portable build still gets vector FMA where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__)
#define MMTN_VECTOR_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define MMTN_VECTOR_CLONES
#endif

template <typename scalar_t>
__attribute__((always_inline)) inline void hidden_layer(const scalar_t* coord, const scalar_t* w1, const scalar_t* b1, int64_t hidden, scalar_t* pre,
                         scalar_t* act) {
  const scalar_t y = coord[0], x = coord[1];
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {
    pre[j] = w1[2 * j] * y + w1[2 * j + 1] * x + b1[j];
    act[j] = pre[j] > 0 ? pre[j] : scalar_t(0);
  }
}

template <typename scalar_t>
MMTN_VECTOR_CLONES void mlp_forward_rows(const scalar_t* coords, const scalar_t* w1, const scalar_t* b1,
                                         const scalar_t* w2, const scalar_t* b2, scalar_t* out, int64_t rows,
                                         int64_t hidden, int64_t heads, int64_t begin, int64_t end) {
  std::vector<scalar_t> pre(hidden), act(hidden);
  for (int64_t t = begin; t < end; ++t) {
    hidden_layer(coords + 2 * t, w1, b1, hidden, pre.data(), act.data());
    for (int64_t h = 0; h < heads; ++h) {
      const scalar_t* w = w2 + h * hidden;
      scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < hidden; ++j) acc += w[j] * act[j];
      out[h * rows + t] = acc + b2[h];  // (heads, rows): the layout the bias gather reads
    }
  }
}

template <typename scalar_t>
void mlp_forward(const scalar_t* coords, const scalar_t* w1, const scalar_t* b1, const scalar_t* w2,
                 const scalar_t* b2, scalar_t* out, int64_t rows, int64_t hidden, int64_t heads) {
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    mlp_forward_rows(coords, w1, b1, w2, b2, out, rows, hidden, heads, begin, end);
  });
}

// Weight-gradient partial sums of rows [begin, end) into acc (w1, b1, w2, b2 concatenated).
template <typename scalar_t>
MMTN_VECTOR_CLONES void mlp_backward_rows(const scalar_t* grad, const scalar_t* coords, const scalar_t* w1,
                                          const scalar_t* b1, const scalar_t* w2, scalar_t* acc, int64_t rows,
                                          int64_t hidden, int64_t heads, int64_t begin, int64_t end) {
  std::vector<scalar_t> pre(hidden), act(hidden), grad_hidden(hidden);
  scalar_t* acc_w1 = acc;
  scalar_t* acc_b1 = acc_w1 + 2 * hidden;
  scalar_t* acc_w2 = acc_b1 + hidden;
  scalar_t* acc_b2 = acc_w2 + heads * hidden;
  for (int64_t t = begin; t < end; ++t) {
    const scalar_t* coord = coords + 2 * t;
    hidden_layer(coord, w1, b1, hidden, pre.data(), act.data());
    std::fill(grad_hidden.begin(), grad_hidden.end(), scalar_t(0));
    for (int64_t h = 0; h < heads; ++h) {
      const scalar_t g = grad[h * rows + t];
      const scalar_t* w = w2 + h * hidden;
      scalar_t* aw = acc_w2 + h * hidden;
#pragma omp simd
      for (int64_t j = 0; j < hidden; ++j) {
        aw[j] += g * act[j];
        grad_hidden[j] += g * w[j];
      }
      acc_b2[h] += g;
    }
    const scalar_t y = coord[0], x = coord[1];
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      const scalar_t ga = pre[j] > 0 ? grad_hidden[j] : scalar_t(0);
      acc_b1[j] += ga;
      acc_w1[2 * j] += ga * y;
      acc_w1[2 * j + 1] += ga * x;
    }
  }
}

template <typename scalar_t>
void mlp_backward(const scalar_t* grad, const scalar_t* coords, const scalar_t* w1, const scalar_t* b1,
                  const scalar_t* w2, scalar_t* grad_w1, scalar_t* grad_b1, scalar_t* grad_w2, scalar_t* grad_b2,
                  int64_t rows, int64_t hidden, int64_t heads) {
  // Weight gradients sum over all rows: per-task partial sums (of a fixed row range, so the result
  // does not depend on the thread count), added in task order.
  const int64_t chunk = std::max<int64_t>(kRowGrain, (rows + 63) / 64);
  const int64_t tasks = (rows + chunk - 1) / chunk;
  const int64_t width = 3 * hidden + heads * hidden + heads;  // w1 (2 per unit), b1, w2, b2
  std::vector<double> partial(tasks * width, 0.0);
  at::parallel_for(0, tasks, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<scalar_t> acc(width);
    for (int64_t task = task_begin; task < task_end; ++task) {
      std::fill(acc.begin(), acc.end(), scalar_t(0));
      mlp_backward_rows(grad, coords, w1, b1, w2, acc.data(), rows, hidden, heads, task * chunk,
                        std::min(rows, (task + 1) * chunk));
      double* p = partial.data() + task * width;
      for (int64_t i = 0; i < width; ++i) p[i] = acc[i];
    }
  });
  std::vector<double> total(width, 0.0);
  for (int64_t task = 0; task < tasks; ++task)
    for (int64_t i = 0; i < width; ++i) total[i] += partial[task * width + i];
  const double* t = total.data();
  for (int64_t i = 0; i < 2 * hidden; ++i) grad_w1[i] = static_cast<scalar_t>(t[i]);
  for (int64_t i = 0; i < hidden; ++i) grad_b1[i] = static_cast<scalar_t>(t[2 * hidden + i]);
  for (int64_t i = 0; i < heads * hidden; ++i) grad_w2[i] = static_cast<scalar_t>(t[3 * hidden + i]);
  for (int64_t i = 0; i < heads; ++i) grad_b2[i] = static_cast<scalar_t>(t[3 * hidden + heads * hidden + i]);
}

}  // namespace

void position_bias_mlp_forward_cpu(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(coords.scalar_type(), "position_bias_mlp_forward_cpu", [&] {
    mlp_forward<scalar_t>(coords.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                          w2.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), coords.size(0),
                          w1.size(0), w2.size(0));
  });
}

void position_bias_mlp_backward_cpu(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& w1,
                                    const at::Tensor& b1, const at::Tensor& w2, at::Tensor& grad_w1,
                                    at::Tensor& grad_b1, at::Tensor& grad_w2, at::Tensor& grad_b2) {
  AT_DISPATCH_FLOATING_TYPES(coords.scalar_type(), "position_bias_mlp_backward_cpu", [&] {
    mlp_backward<scalar_t>(grad.data_ptr<scalar_t>(), coords.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(),
                           b1.data_ptr<scalar_t>(), w2.data_ptr<scalar_t>(), grad_w1.data_ptr<scalar_t>(),
                           grad_b1.data_ptr<scalar_t>(), grad_w2.data_ptr<scalar_t>(), grad_b2.data_ptr<scalar_t>(),
                           coords.size(0), w1.size(0), w2.size(0));
  });
}

}  // namespace mmtransnext
