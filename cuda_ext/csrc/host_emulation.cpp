// CPU emulation of the CUDA kernels, for tests only: runs the exact per-thread bodies of
// render_math.h in plain loops (atomic adds become plain adds). Compiled by the CPU tests
// with the system C++ compiler and loaded with ctypes; no torch or CUDA headers.
#include "render_math.h"

extern "C" {

void t3d_triplane_forward(const float* planes_cl, const float* points, float* out, int64_t B,
                          int64_t N, int C, int H, int W, int concat) {
  for (int64_t p = 0; p < B * N; ++p)
    t3d::triplane_forward_point(p, planes_cl, points, out, N, C, H, W, concat != 0);
}

void t3d_triplane_backward(const float* planes_cl, const float* points, const float* grad_out,
                           float* grad_planes_cl, float* grad_points, int64_t B, int64_t N, int C,
                           int H, int W, int concat) {
  for (int64_t p = 0; p < B * N; ++p)
    t3d::triplane_backward_point(p, planes_cl, points, grad_out, grad_planes_cl, grad_points, N, C,
                                 H, W, concat != 0);
}

void t3d_composite_forward(const float* sigmas, const float* features, const float* t_vals,
                           const float* deltas, float* weights, float* trans, float* out,
                           float* depth, float* alpha, int64_t R, int S, int C) {
  for (int64_t r = 0; r < R; ++r)
    t3d::composite_forward_ray(r, sigmas, t_vals, deltas, weights, trans, depth, alpha, S);
  for (int64_t i = 0; i < R * C; ++i) t3d::composite_features_elem(i, weights, features, out, S, C);
}

void t3d_composite_backward(const float* sigmas, const float* features, const float* t_vals,
                            const float* deltas, const float* weights, const float* trans,
                            const float* g_weights, const float* g_trans, const float* g_feat,
                            const float* g_depth, const float* g_alpha, float* scratch,
                            float* g_sigmas, float* g_features, float* g_tvals, float* g_deltas,
                            int64_t R, int S, int C) {
  for (int64_t i = 0; i < R * S; ++i)
    t3d::composite_backward_sample(i, features, t_vals, weights, g_weights, g_feat, g_depth,
                                   g_alpha, scratch, g_features, S, C);
  for (int64_t r = 0; r < R; ++r)
    t3d::composite_backward_ray(r, sigmas, deltas, weights, trans, scratch, g_trans, g_depth,
                                g_sigmas, g_deltas, g_tvals, S);
}

}  // extern "C"
