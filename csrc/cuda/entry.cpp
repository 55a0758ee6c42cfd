// rft::cuda entry points (declared in csrc/ops.h): check the contract, set the device, pick the stream,
// allocate scratch, call the torch-free launchers of csrc/cuda/*.cu (launch.h) and check the launches.
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

DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kHalf:
      return DType::kHalf;
    default:
      TORCH_CHECK(false, "rft_fast: CUDA kernels take float32, bfloat16 or float16 tensors, got ", t);
  }
  return DType::kFloat;  // unreachable
}

void check_norm(int64_t norm) {
  TORCH_CHECK(norm == kLinf || norm == kL2 || norm == kL1,
              "rft_fast: norm must be 0 (Linf), 1 (L2) or 2 (L1), got ", norm);
}

void check_x_adv(const at::Tensor& x_adv) {
  TORCH_CHECK(x_adv.defined() && x_adv.is_cuda(), "rft_fast: x_adv must be a CUDA tensor");
  TORCH_CHECK(x_adv.dim() == 2, "rft_fast: x_adv must be a 2-D (N, D) tensor, got ", x_adv.dim(), " dims");
  TORCH_CHECK(x_adv.is_contiguous(), "rft_fast: x_adv must be contiguous");
  kernel_dtype(x_adv.scalar_type());
  // One block per row in the per-row kernels (grid.x), uint32 counts over a row.
  TORCH_CHECK(x_adv.size(0) <= std::numeric_limits<int32_t>::max(), "rft_fast: too many rows (", x_adv.size(0),
              ")");
  TORCH_CHECK(x_adv.size(1) <= std::numeric_limits<int32_t>::max(), "rft_fast: rows too long (", x_adv.size(1),
              ")");
}

// Every other image tensor: same shape, dtype and device as x_adv, contiguous.
void check_image(const char* name, const at::Tensor& t, const at::Tensor& x_adv) {
  TORCH_CHECK(t.defined(), "rft_fast: ", name, " is undefined");
  TORCH_CHECK(t.device() == x_adv.device(), "rft_fast: ", name, " is on ", t.device(), ", expected ",
              x_adv.device());
  TORCH_CHECK(t.sizes() == x_adv.sizes(), "rft_fast: ", name, " has shape ", t.sizes(), ", expected ",
              x_adv.sizes());
  TORCH_CHECK(t.scalar_type() == x_adv.scalar_type(), "rft_fast: ", name, " has dtype ", t.scalar_type(),
              ", expected ", x_adv.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "rft_fast: ", name, " must be contiguous");
}

// Per-row parameters: (N,) contiguous of `dtype` on the device of x_adv.
void check_per_row(const char* name, const at::Tensor& t, at::ScalarType dtype, const at::Tensor& x_adv) {
  TORCH_CHECK(t.defined(), "rft_fast: ", name, " is undefined");
  TORCH_CHECK(t.device() == x_adv.device(), "rft_fast: ", name, " is on ", t.device(), ", expected ",
              x_adv.device());
  TORCH_CHECK(t.scalar_type() == dtype, "rft_fast: ", name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x_adv.size(0), "rft_fast: ", name, " must have shape (",
              x_adv.size(0), ",), got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "rft_fast: ", name, " must be contiguous");
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

// Call with the device guard in place.
detail::Launch make_launch(const at::Tensor& x_adv) {
  detail::Launch L;
  L.dtype = kernel_dtype(x_adv.scalar_type());
  L.N = x_adv.size(0);
  L.D = x_adv.size(1);
  L.tiling = detail::make_tiling(L.N, L.D, L.dtype, sm_count());
  L.stream = c10::cuda::getCurrentCUDAStream().stream();
  return L;
}

const float* f32(const at::Tensor& t) { return t.const_data_ptr<float>(); }

}  // namespace

void project(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps, int64_t norm) {
  check_norm(norm);
  check_x_adv(x_adv);
  check_image("out", out, x_adv);
  check_image("x", x, x_adv);
  check_per_row("eps", eps, at::kFloat, x_adv);
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const detail::Launch L = make_launch(x_adv);
  void* o = out.mutable_data_ptr();
  const void* xa = x_adv.const_data_ptr();
  const void* xx = x.const_data_ptr();
  switch (norm) {
    case kLinf:
      detail::linf_project(L, o, xa, xx, f32(eps));
      break;
    case kL2:
      detail::l2_project(L, o, xa, xx, f32(eps));
      break;
    default:
      detail::l1_project(L, o, xa, xx, f32(eps));
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void pgd_step(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& grad,
              const at::Tensor& step, const at::Tensor& eps, int64_t norm, const at::Tensor& keep) {
  check_norm(norm);
  check_x_adv(x_adv);
  check_image("out", out, x_adv);
  check_image("x", x, x_adv);
  check_image("grad", grad, x_adv);
  check_per_row("step", step, at::kFloat, x_adv);
  check_per_row("eps", eps, at::kFloat, x_adv);
  if (norm == kL1) check_per_row("keep", keep, at::kLong, x_adv);
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const detail::Launch L = make_launch(x_adv);
  void* o = out.mutable_data_ptr();
  const void* xa = x_adv.const_data_ptr();
  const void* xx = x.const_data_ptr();
  const void* g = grad.const_data_ptr();
  switch (norm) {
    case kLinf:
      detail::linf_pgd_step(L, o, xa, xx, g, f32(step), f32(eps));
      break;
    case kL2: {
      at::Tensor ws = at::empty({detail::l2_workspace_floats(L.tiling, false)}, x_adv.options().dtype(at::kFloat));
      detail::l2_pgd_step(L, o, xa, xx, g, f32(step), f32(eps), ws.mutable_data_ptr<float>());
      break;
    }
    default:
      detail::l1_pgd_step(L, o, xa, xx, g, f32(step), f32(eps), keep.const_data_ptr<int64_t>());
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void apgd_step(at::Tensor x_next, at::Tensor z, const at::Tensor& x_adv, const at::Tensor& x_prev,
               const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step, const at::Tensor& eps,
               int64_t norm, double momentum, const at::Tensor& keep) {
  check_norm(norm);
  check_x_adv(x_adv);
  check_image("x_next", x_next, x_adv);
  check_image("z", z, x_adv);
  check_image("x_prev", x_prev, x_adv);
  check_image("x", x, x_adv);
  check_image("grad", grad, x_adv);
  check_per_row("step", step, at::kFloat, x_adv);
  check_per_row("eps", eps, at::kFloat, x_adv);
  TORCH_CHECK(momentum >= 0.0 && momentum <= 1.0, "rft_fast: momentum must be in [0, 1], got ", momentum);
  if (norm == kL1) check_per_row("keep", keep, at::kLong, x_adv);
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const detail::Launch L = make_launch(x_adv);
  void* xn = x_next.mutable_data_ptr();
  void* zz = z.mutable_data_ptr();
  const void* xa = x_adv.const_data_ptr();
  const void* xp = x_prev.const_data_ptr();
  const void* xx = x.const_data_ptr();
  const void* g = grad.const_data_ptr();
  switch (norm) {
    case kLinf:
      detail::linf_apgd_step(L, xn, zz, xa, xp, xx, g, f32(step), f32(eps), momentum);
      break;
    case kL2: {
      at::Tensor ws = at::empty({detail::l2_workspace_floats(L.tiling, true)}, x_adv.options().dtype(at::kFloat));
      detail::l2_apgd_step(L, xn, zz, xa, xp, xx, g, f32(step), f32(eps), momentum, ws.mutable_data_ptr<float>());
      break;
    }
    default:
      detail::l1_apgd_step(L, xn, zz, xa, xp, xx, g, f32(step), f32(eps), momentum, keep.const_data_ptr<int64_t>());
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rft

#endif  // RFT_WITH_CUDA
