// Host-side launchers of the talk3d CUDA kernels (defined in the .cu files).
// Plain C++ API on raw float32 pointers so the kernels compile with nvcc alone; the torch
// binding (bindings.cpp) checks tensors and calls these. Each returns the launch status.
#pragma once

#include <stdint.h>
#include <cuda_runtime_api.h>

namespace t3d {

cudaError_t launch_triplane_forward(const float* planes_cl, const float* points, float* out,
                                    int64_t B, int64_t N, int C, int H, int W, bool concat,
                                    cudaStream_t stream);

cudaError_t launch_triplane_backward(const float* planes_cl, const float* points,
                                     const float* grad_out, float* grad_planes_cl,
                                     float* grad_points, int64_t B, int64_t N, int C, int H,
                                     int W, bool concat, cudaStream_t stream);

cudaError_t launch_composite_forward(const float* sigmas, const float* features,
                                     const float* t_vals, const float* deltas, float* weights,
                                     float* trans, float* out_features, float* depth,
                                     float* alpha, int64_t R, int S, int C, cudaStream_t stream);

cudaError_t launch_composite_backward(const float* sigmas, const float* features,
                                      const float* t_vals, const float* deltas,
                                      const float* weights, const float* trans,
                                      const float* g_weights, const float* g_trans,
                                      const float* g_feat, const float* g_depth,
                                      const float* g_alpha, float* gw_scratch, float* g_sigmas,
                                      float* g_features, float* g_tvals, float* g_deltas,
                                      int64_t R, int S, int C, cudaStream_t stream);

}  // namespace t3d
