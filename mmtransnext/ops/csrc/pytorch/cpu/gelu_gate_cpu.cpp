// gelu(gate) * value and its backward in one pass each (the gate of ConvGLU), CPU.
//
// Through PyTorch ops the gate is five passes over the (tokens x hidden) layer forward and nine
// backward, with gelu(gate) kept for backward; here forward reads gate and value once and writes the
// product, and backward recomputes gelu from the gate. GELU is the exact (erf) one:
// gelu(x) = x / 2 * erfc(-x / sqrt 2), erfc by Numerical Recipes' Chebyshev fit (relative error below
// 1.2e-7 everywhere), so the loops vectorise.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../../common/cpu_math.h"
#include "../gelu_gate.h"

namespace mmtransnext {
namespace {

// erfc(x) and exp(-x^2) together (the derivative needs the latter).
template <typename T>
MMTN_INLINE T erfc_of(T x, T* gauss) {
  const T z = std::abs(x);
  const T t = T(1) / (T(1) + T(0.5) * z);
  T p = T(0.17087277);
  p = p * t + T(-0.82215223);
  p = p * t + T(1.48851587);
  p = p * t + T(-1.13520398);
  p = p * t + T(0.27886807);
  p = p * t + T(-0.18628806);
  p = p * t + T(0.09678418);
  p = p * t + T(0.37409196);
  p = p * t + T(1.00002368);
  p = p * t + T(-1.26551223);
  *gauss = exp_any(-z * z);
  const T tail = t * exp_any(-z * z + p);
  const T negative = static_cast<T>(x < T(0));  // erfc(-z) = 2 - erfc(z), as arithmetic (no select)
  return tail + negative * (T(2) - T(2) * tail);
}

template <typename T>
MMTN_INLINE void forward_impl(const T* gate, const T* value, T* out, int64_t begin, int64_t end) {
  constexpr T kInvSqrt2 = T(0.70710678118654752440);
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const T x = gate[i];
    T gauss;
    out[i] = T(0.5) * x * erfc_of(-x * kInvSqrt2, &gauss) * value[i];
  }
}

template <typename T>
MMTN_INLINE void backward_impl(const T* grad, const T* gate, const T* value, T* grad_gate, T* grad_value, int64_t begin,
                               int64_t end) {
  constexpr T kInvSqrt2 = T(0.70710678118654752440), kInvSqrt2Pi = T(0.39894228040143267794);
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const T x = gate[i], g = grad[i];
    T gauss;  // exp(-x^2 / 2)
    const T cdf = T(0.5) * erfc_of(-x * kInvSqrt2, &gauss);
    grad_value[i] = g * x * cdf;
    grad_gate[i] = g * value[i] * (cdf + x * gauss * kInvSqrt2Pi);
  }
}

MMTN_VECTOR_CLONES void forward_range(const float* a, const float* v, float* o, int64_t b, int64_t e) {
  forward_impl(a, v, o, b, e);
}
void forward_range(const double* a, const double* v, double* o, int64_t b, int64_t e) { forward_impl(a, v, o, b, e); }
MMTN_VECTOR_CLONES void backward_range(const float* g, const float* a, const float* v, float* ga, float* gv, int64_t b,
                                       int64_t e) {
  backward_impl(g, a, v, ga, gv, b, e);
}
void backward_range(const double* g, const double* a, const double* v, double* ga, double* gv, int64_t b, int64_t e) {
  backward_impl(g, a, v, ga, gv, b, e);
}

constexpr int64_t kGrain = 1 << 14;

}  // namespace

void gelu_gate_forward_cpu(const at::Tensor& gate, const at::Tensor& value, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(gate.scalar_type(), "gelu_gate_forward_cpu", [&] {
    const scalar_t *a = gate.data_ptr<scalar_t>(), *v = value.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, gate.numel(), kGrain, [&](int64_t b, int64_t e) { forward_range(a, v, o, b, e); });
  });
}

void gelu_gate_backward_cpu(const at::Tensor& grad, const at::Tensor& gate, const at::Tensor& value,
                            at::Tensor& grad_gate, at::Tensor& grad_value) {
  AT_DISPATCH_FLOATING_TYPES(gate.scalar_type(), "gelu_gate_backward_cpu", [&] {
    const scalar_t *g = grad.data_ptr<scalar_t>(), *a = gate.data_ptr<scalar_t>(), *v = value.data_ptr<scalar_t>();
    scalar_t *ga = grad_gate.data_ptr<scalar_t>(), *gv = grad_value.data_ptr<scalar_t>();
    at::parallel_for(0, gate.numel(), kGrain, [&](int64_t b, int64_t e) { backward_range(g, a, v, ga, gv, b, e); });
  });
}

}  // namespace mmtransnext
