// The extension module's type, declared for the op headers' bind_* functions, so that the kernels' sources (the .cu
// files above all: nvcc parses every header twice) need not include torch/extension.h, pybind11 and Python's API.
#pragma once

namespace pybind11 {
class module_;
}  // namespace pybind11
namespace py = pybind11;
