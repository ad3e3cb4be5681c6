// Ray compositing: forward and backward kernels.
// Forward: one thread per ray (weights, transmittance, depth, alpha), then one thread per
// (ray, channel) for the accumulated features (coalesced reads of the features).
// Backward: one thread per sample (upstream gradient on each weight, grad features), then
// one thread per ray for the reverse scan to sigmas / deltas / t_vals.
#include "launchers.h"
#include "render_math.h"

namespace t3d {
namespace {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) { return (unsigned int)((n + kThreads - 1) / kThreads); }

__global__ void composite_forward_ray_kernel(const float* __restrict__ sigmas,
                                             const float* __restrict__ t_vals,
                                             const float* __restrict__ deltas, float* weights,
                                             float* trans, float* depth, float* alpha, int64_t R,
                                             int S) {
  int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= R) return;
  composite_forward_ray(r, sigmas, t_vals, deltas, weights, trans, depth, alpha, S);
}

__global__ void composite_features_kernel(const float* __restrict__ weights,
                                          const float* __restrict__ features, float* out,
                                          int64_t total, int S, int C) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  composite_features_elem(i, weights, features, out, S, C);
}

__global__ void composite_backward_sample_kernel(
    const float* __restrict__ features, const float* __restrict__ t_vals,
    const float* __restrict__ weights, const float* __restrict__ g_weights,
    const float* __restrict__ g_feat, const float* __restrict__ g_depth,
    const float* __restrict__ g_alpha, float* gw_total, float* g_features, int64_t total, int S,
    int C) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  composite_backward_sample(i, features, t_vals, weights, g_weights, g_feat, g_depth, g_alpha,
                            gw_total, g_features, S, C);
}

__global__ void composite_backward_ray_kernel(
    const float* __restrict__ sigmas, const float* __restrict__ deltas,
    const float* __restrict__ weights, const float* __restrict__ trans,
    const float* __restrict__ gw_total, const float* __restrict__ g_trans,
    const float* __restrict__ g_depth, float* g_sigmas, float* g_deltas, float* g_tvals,
    int64_t R, int S) {
  int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= R) return;
  composite_backward_ray(r, sigmas, deltas, weights, trans, gw_total, g_trans, g_depth, g_sigmas,
                         g_deltas, g_tvals, S);
}

}  // namespace

cudaError_t launch_composite_forward(const float* sigmas, const float* features,
                                     const float* t_vals, const float* deltas, float* weights,
                                     float* trans, float* out_features, float* depth,
                                     float* alpha, int64_t R, int S, int C, cudaStream_t stream) {
  if (R == 0) return cudaSuccess;
  composite_forward_ray_kernel<<<blocks_for(R), kThreads, 0, stream>>>(
      sigmas, t_vals, deltas, weights, trans, depth, alpha, R, S);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || C == 0) return err;
  const int64_t total = R * C;
  composite_features_kernel<<<blocks_for(total), kThreads, 0, stream>>>(weights, features,
                                                                        out_features, total, S, C);
  return cudaGetLastError();
}

cudaError_t launch_composite_backward(const float* sigmas, const float* features,
                                      const float* t_vals, const float* deltas,
                                      const float* weights, const float* trans,
                                      const float* g_weights, const float* g_trans,
                                      const float* g_feat, const float* g_depth,
                                      const float* g_alpha, float* gw_scratch, float* g_sigmas,
                                      float* g_features, float* g_tvals, float* g_deltas,
                                      int64_t R, int S, int C, cudaStream_t stream) {
  const int64_t total = R * (int64_t)S;
  if (total == 0) return cudaSuccess;
  composite_backward_sample_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
      features, t_vals, weights, g_weights, g_feat, g_depth, g_alpha, gw_scratch, g_features,
      total, S, C);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  composite_backward_ray_kernel<<<blocks_for(R), kThreads, 0, stream>>>(
      sigmas, deltas, weights, trans, gw_scratch, g_trans, g_depth, g_sigmas, g_deltas, g_tvals,
      R, S);
  return cudaGetLastError();
}

}  // namespace t3d
