// The extension's CUDA path, built for the CPU emulation of the CUDA execution model (cuda_emulation.h): the
// dispatchers, the .cu launchers and the kernels as the CUDA build compiles them (WITH_CUDA), with CPU tensors
// standing for device memory (on_cuda() is true for them here). tests/test_cuda_emulation.py builds it.
#include <array>

#include "cuda_emulation.h"

#define WITH_CUDA
#include "../../mmtransnext/ops/csrc/pytorch/cuda/local_attention_cuda.cu"
#include "../../mmtransnext/ops/csrc/pytorch/cuda/pooled_attention_cuda.cu"
#include "../../mmtransnext/ops/csrc/pytorch/local_attention.cpp"
#include "../../mmtransnext/ops/csrc/pytorch/pooled_attention.cpp"
#include "../../mmtransnext/ops/csrc/pytorch/python_bindings.h"

namespace mmtransnext {

// Every tensor takes the CUDA path here, so the CPU kernels are not part of this module.
[[noreturn]] static void cpu_path() { TORCH_CHECK(false, "the CUDA emulation runs the CUDA path only"); }
void local_similarity_forward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
                                  const LocalWindow&) {
  cpu_path();
}
void local_similarity_backward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&,
                                   at::Tensor&, const LocalWindow&) {
  cpu_path();
}
void local_aggregation_forward_cpu(const at::Tensor&, const at::Tensor&, at::Tensor&, const LocalWindow&) {
  cpu_path();
}
void local_aggregation_backward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&,
                                    const LocalWindow&) {
  cpu_path();
}
void pooled_attention_forward_cpu(const PooledAttentionTensors&, const PooledGrid&) { cpu_path(); }
void pooled_attention_backward_cpu(const PooledAttentionTensors&, const PooledAttentionGrads&, const PooledGrid&) {
  cpu_path();
}

}  // namespace mmtransnext

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  mmtransnext::bind_local_attention(m);
  mmtransnext::bind_pooled_attention(m);
  // the emulation's own controls (tests/test_cuda_emulation.py)
  m.def("emulation_first_block_only", [](bool on) { mmtn_emulation::first_block_only = on; });
  m.def("emulation_launches", [] {  // the launches so far, as dicts; clears the log
    const std::lock_guard<std::mutex> lock(mmtn_emulation::log_mutex);
    py::list launches;
    for (const auto& l : mmtn_emulation::launch_log)
      launches.append(
          py::dict(py::arg("kernel") = l.kernel, py::arg("grid") = py::make_tuple(l.grid.x, l.grid.y, l.grid.z),
                   py::arg("block") = py::make_tuple(l.block.x, l.block.y, l.block.z),
                   py::arg("static_shared") = l.static_shared, py::arg("dynamic_shared") = l.dynamic_shared));
    mmtn_emulation::launch_log.clear();
    return launches;
  });
  m.def("emulation_misfit", [](std::array<unsigned int, 3> grid, std::array<unsigned int, 3> block,
                               size_t static_shared, size_t dynamic_shared) {  // why a launch would not fit
    return mmtn_emulation::misfit_any(
        {"kernel", dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]), static_shared, dynamic_shared});
  });
  m.def("emulation_architectures", [] {
    py::list archs;
    for (const auto& a : mmtn_emulation::kArchitectures)
      archs.append(py::dict(py::arg("compute_capability") = a.compute_capability, py::arg("gpus") = a.gpus,
                            py::arg("threads_per_block") = a.threads_per_block,
                            py::arg("threads_per_sm") = a.threads_per_sm,
                            py::arg("shared_per_block") = a.shared_per_block, py::arg("shared_optin") = a.shared_optin,
                            py::arg("registers_per_block") = a.registers_per_block));
    return archs;
  });
}
