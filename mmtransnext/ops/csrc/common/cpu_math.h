// Elementwise math for the vectorised CPU loops: branch-free, so that GCC vectorises the loops that
// call it (with -fno-trapping-math, see setup.py).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_vectorize.h"

namespace mmtransnext {

template <typename To, typename From>
MMTN_INLINE To bit_cast(From from) {
  To to;
  std::memcpy(&to, &from, sizeof(to));
  return to;
}

// exp(x) to about 1 ulp (Cephes' expf polynomial), branch-free so that the loops calling it
// vectorise (with -fno-trapping-math); 0 below the float range (so exp(-inf) = 0), NaN stays NaN.
MMTN_INLINE float exp_float(float x) {
  const float xc = std::min(std::max(x, -87.f), 88.f);
  const float t = xc * 1.44269504088896341f + 0.5f;
  int32_t n = static_cast<int32_t>(t);
  n -= static_cast<float>(n) > t;  // floor (std::floor does not vectorise)
  const float nf = static_cast<float>(n);
  const float r = (xc - nf * 0.693359375f) - nf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = (p * r * r + r + 1.f) * bit_cast<float>((n + 127) << 23);
  const uint32_t keep = 0u - static_cast<uint32_t>(x >= -87.f), nan = 0u - static_cast<uint32_t>(x != x);
  return bit_cast<float>((bit_cast<uint32_t>(e) & keep) | (bit_cast<uint32_t>(x) & nan));
}

MMTN_INLINE float exp_any(float x) { return exp_float(x); }
MMTN_INLINE double exp_any(double x) { return std::exp(x); }

}  // namespace mmtransnext
