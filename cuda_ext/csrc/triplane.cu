// Triplane bilinear sampling: forward and backward kernels (one thread per point).
// Plain CUDA C++ (no torch headers); bodies live in render_math.h.
#include "launchers.h"
#include "render_math.h"

namespace t3d {
namespace {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) { return (unsigned int)((n + kThreads - 1) / kThreads); }

__global__ void triplane_forward_kernel(const float* __restrict__ planes_cl,
                                        const float* __restrict__ points, float* __restrict__ out,
                                        int64_t total, int64_t N, int C, int H, int W, bool concat) {
  int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= total) return;
  triplane_forward_point(p, planes_cl, points, out, N, C, H, W, concat);
}

__global__ void triplane_backward_kernel(const float* __restrict__ planes_cl,
                                         const float* __restrict__ points,
                                         const float* __restrict__ grad_out, float* grad_planes_cl,
                                         float* grad_points, int64_t total, int64_t N, int C,
                                         int H, int W, bool concat) {
  int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= total) return;
  triplane_backward_point(p, planes_cl, points, grad_out, grad_planes_cl, grad_points, N, C, H,
                          W, concat);
}

}  // namespace

cudaError_t launch_triplane_forward(const float* planes_cl, const float* points, float* out,
                                    int64_t B, int64_t N, int C, int H, int W, bool concat,
                                    cudaStream_t stream) {
  const int64_t total = B * N;
  if (total == 0) return cudaSuccess;
  triplane_forward_kernel<<<blocks_for(total), kThreads, 0, stream>>>(planes_cl, points, out,
                                                                      total, N, C, H, W, concat);
  return cudaGetLastError();
}

cudaError_t launch_triplane_backward(const float* planes_cl, const float* points,
                                     const float* grad_out, float* grad_planes_cl,
                                     float* grad_points, int64_t B, int64_t N, int C, int H,
                                     int W, bool concat, cudaStream_t stream) {
  const int64_t total = B * N;
  if (total == 0 || (grad_planes_cl == nullptr && grad_points == nullptr)) return cudaSuccess;
  triplane_backward_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
      planes_cl, points, grad_out, grad_planes_cl, grad_points, total, N, C, H, W, concat);
  return cudaGetLastError();
}

}  // namespace t3d
