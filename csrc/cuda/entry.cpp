// The CUDA side (rft::cuda::run, csrc/ops.h): a call that obeys the contract (checked once, csrc/contract.h)
// becomes one detail::Call: device guard, stream, tiling, the norm's scratch; then the norm's torch-free
// launcher (csrc/cuda/*.cu, launch.h) from the table, and the launch check.
// A host-only file (compiled by the C++ compiler, so nvcc never parses torch/extension.h); empty unless the
// extension is built with its CUDA kernels.
#ifdef RFT_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "cuda/launch.h"
#include "ops.h"

namespace rft {
namespace cuda {
namespace {

using detail::DType;

// The kernels of each norm, indexed by Norm.
constexpr detail::NormKernels kNorms[kNumNorms] = {
    {detail::no_workspace, detail::linf_run},
    {detail::l2_workspace_floats, detail::l2_run},
    {detail::no_workspace, detail::l1_run},
};

DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      return DType::kHalf;  // the contract allows no other dtype
  }
}

int sm_count() {
  constexpr int kMaxDevices = 64;
  static int cache[kMaxDevices] = {};  // benign race: every writer stores the same value
  const int dev = c10::cuda::current_device();
  if (dev >= 0 && dev < kMaxDevices && cache[dev] > 0) return cache[dev];
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  n = std::max(n, 1);
  if (dev >= 0 && dev < kMaxDevices) cache[dev] = n;
  return n;
}

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

}  // namespace

void run(const OpArgs& a) {
  const at::Tensor& x_adv = a.x_adv;
  // One block per row in the per-row kernels (grid.x), uint32 counts over a row.
  TORCH_CHECK(x_adv.size(0) <= std::numeric_limits<int32_t>::max(), "rft_fast: too many rows (", x_adv.size(0),
              ")");
  TORCH_CHECK(x_adv.size(1) <= std::numeric_limits<int32_t>::max(), "rft_fast: rows too long (", x_adv.size(1),
              ")");
  const c10::cuda::CUDAGuard guard(x_adv.device());
  detail::Call c{};
  c.dtype = kernel_dtype(x_adv.scalar_type());
  c.N = x_adv.size(0);
  c.D = x_adv.size(1);
  c.tiling = detail::make_tiling(c.N, c.D, c.dtype, sm_count());
  c.stream = c10::cuda::getCurrentCUDAStream().stream();
  c.out = a.out.mutable_data_ptr();
  c.z = a.z.defined() ? a.z.mutable_data_ptr() : nullptr;
  c.x_adv = x_adv.const_data_ptr();
  c.x_prev = data_or_null(a.x_prev);
  c.x = a.x.const_data_ptr();
  c.grad = data_or_null(a.grad);
  c.eps = a.eps.const_data_ptr<float>();
  c.step = a.step.defined() ? a.step.const_data_ptr<float>() : nullptr;
  c.keep = a.norm == kL1 && a.op != Op::kProject ? a.keep.const_data_ptr<int64_t>() : nullptr;
  c.momentum = a.momentum;
  c.flag = a.flag.defined() ? a.flag.mutable_data_ptr<int32_t>() : nullptr;
  const detail::NormKernels& norm = kNorms[a.norm];
  at::Tensor workspace;
  if (const int64_t floats = norm.workspace_floats(a.op, c.tiling); floats > 0) {
    workspace = at::empty({floats}, x_adv.options().dtype(at::kFloat));
    c.workspace = workspace.mutable_data_ptr<float>();
  }
  norm.run(a.op, c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rft

#endif  // RFT_WITH_CUDA
