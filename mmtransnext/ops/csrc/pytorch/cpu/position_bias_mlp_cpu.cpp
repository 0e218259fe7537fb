// The continuous position bias MLP, fc2(relu(fc1(coords))), fused on the CPU.
//
// The MLP runs on every distinct relative offset (about 60k for stage 1 at img_size 512), with a
// 512-wide hidden layer: through nn.Linear that is a (T, 512) activation written to memory, re-read
// and kept for backward in every block. Here rows go through in blocks of kBlock, so a block's hidden
// layer stays in cache (and the matrix products still run on BLAS); backward recomputes it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../position_bias_mlp.h"

namespace mmtransnext {
namespace {

constexpr int64_t kBlock = 256;  // rows per block: 256 x 512 floats = 512 KiB of hidden layer

// Rows [begin, end) forward; out is (heads, rows).
void forward_rows(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                  const at::Tensor& b2, at::Tensor& out, int64_t begin, int64_t end) {
  for (int64_t start = begin; start < end; start += kBlock) {
    const int64_t len = std::min(kBlock, end - start);
    at::Tensor act = at::addmm(b1, coords.narrow(0, start, len), w1.t()).clamp_min_(0);
    out.narrow(1, start, len).copy_(at::addmm(b2, act, w2.t()).t());
  }
}

// Adds the weight gradients of rows [begin, end) to acc = (grad_w1, grad_b1, grad_w2, grad_b2).
void backward_rows(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                   const at::Tensor& w2, std::vector<at::Tensor>& acc, int64_t begin, int64_t end) {
  for (int64_t start = begin; start < end; start += kBlock) {
    const int64_t len = std::min(kBlock, end - start);
    const at::Tensor coord = coords.narrow(0, start, len);
    const at::Tensor pre = at::addmm(b1, coord, w1.t());
    const at::Tensor g = grad.narrow(1, start, len).t();  // (len, heads)
    acc[2].addmm_(g.t(), pre.clamp_min(0));
    acc[3].add_(g.sum(0));
    const at::Tensor grad_pre = at::mm(g, w2).mul_(pre.gt(0));
    acc[1].add_(grad_pre.sum(0));
    acc[0].addmm_(grad_pre.t(), coord);
  }
}

}  // namespace

void position_bias_mlp_forward_cpu(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2, at::Tensor& out) {
  at::parallel_for(0, coords.size(0), kBlock, [&](int64_t begin, int64_t end) {
    forward_rows(coords, w1, b1, w2, b2, out, begin, end);
  });
}

void position_bias_mlp_backward_cpu(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& w1,
                                    const at::Tensor& b1, const at::Tensor& w2, at::Tensor& grad_w1,
                                    at::Tensor& grad_b1, at::Tensor& grad_w2, at::Tensor& grad_b2) {
  // Weight gradients sum over all rows: partial sums over fixed row ranges (so the result does not
  // depend on the thread count), added in order in float64.
  const int64_t rows = coords.size(0);
  const int64_t chunk = std::max<int64_t>(kBlock, (rows + 63) / 64);
  const int64_t tasks = (rows + chunk - 1) / chunk;
  std::vector<std::vector<at::Tensor>> partial(tasks);
  at::parallel_for(0, tasks, 1, [&](int64_t task_begin, int64_t task_end) {
    for (int64_t task = task_begin; task < task_end; ++task) {
      std::vector<at::Tensor> acc = {at::zeros_like(w1), at::zeros_like(b1), at::zeros_like(w2),
                                     at::zeros({w2.size(0)}, w2.options())};
      backward_rows(grad, coords, w1, b1, w2, acc, task * chunk, std::min(rows, (task + 1) * chunk));
      partial[task] = std::move(acc);
    }
  });
  std::vector<at::Tensor> outputs = {grad_w1, grad_b1, grad_w2, grad_b2};
  for (size_t i = 0; i < outputs.size(); ++i) {
    at::Tensor total = at::zeros(outputs[i].sizes(), outputs[i].options().dtype(at::kDouble));
    for (int64_t task = 0; task < tasks; ++task) total.add_(partial[task][i]);
    outputs[i].copy_(total);
  }
}

}  // namespace mmtransnext
