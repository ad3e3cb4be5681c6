// Per-thread bodies of the talk3d volume-rendering kernels.
//
// Plain C++ that compiles both as CUDA device code (included from the .cu files) and as
// host code (included from host_emulation.cpp, which the CPU tests compile with g++ to
// check these exact bodies against the torch twin without a GPU). No torch headers.
//
// Layouts (all float32, contiguous):
//   planes_cl   (B, 3, H, W, C)  channels-last copy of the (B, 3, C, H, W) planes
//   points      (B, N, 3)
//   feats_out   (B, N, C) for reduce="sum", (B, N, 3C) for reduce="concat"
//   sigmas, deltas, t_vals, weights, trans: (R, S);  features (R, S, C);  out (R, C)
#pragma once

#include <stdint.h>
#include <math.h>

#if defined(__CUDACC__)
#define T3D_HD __host__ __device__ __forceinline__
#else
#define T3D_HD inline
#endif

namespace t3d {

// Which two point coordinates index plane k (first -> width/x, second -> height/y).
// Must equal talk3d.ops.reference.PLANE_AXES.
T3D_HD int plane_axis(int k, int j) {
  // k = 0: (0, 1); k = 1: (0, 2); k = 2: (1, 2)
  return j == 0 ? (k == 2 ? 1 : 0) : (k == 0 ? 1 : 2);
}

T3D_HD void atomic_add(float* p, float v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;
#endif
}

// Bilinear footprint of one point on one plane, grid_sample(align_corners=False, zeros).
struct Footprint {
  int64_t off[4];   // element offset of corner (x0,y0), (x1,y0), (x0,y1), (x1,y1) / C
  bool valid[4];    // corner inside the plane
  float wx1, wy1;   // fractional position (weight of the x1 / y1 corners)
};

T3D_HD Footprint footprint(float u, float v, int H, int W) {
  Footprint fp;
  // Unnormalise: pixel centre i sits at (i + 0.5) / W * 2 - 1.
  float ix = ((u + 1.f) * W - 1.f) * 0.5f;
  float iy = ((v + 1.f) * H - 1.f) * 0.5f;
  // Far outside (or NaN): all corners invalid; keeps the int conversion in range.
  bool inside = (ix > -2.f) && (ix < (float)W + 1.f) && (iy > -2.f) && (iy < (float)H + 1.f);
  if (!inside) {
    for (int j = 0; j < 4; ++j) { fp.off[j] = 0; fp.valid[j] = false; }
    fp.wx1 = 0.f; fp.wy1 = 0.f;
    return fp;
  }
  float fx0 = floorf(ix), fy0 = floorf(iy);
  int x0 = (int)fx0, y0 = (int)fy0;
  fp.wx1 = ix - fx0;
  fp.wy1 = iy - fy0;
  for (int j = 0; j < 4; ++j) {
    int x = x0 + (j & 1), y = y0 + (j >> 1);
    fp.valid[j] = (x >= 0) && (x < W) && (y >= 0) && (y < H);
    fp.off[j] = fp.valid[j] ? ((int64_t)y * W + x) : 0;
  }
  return fp;
}

// ---------------------------------------------------------------- triplane sampling
// One thread per point p in [0, B*N).
T3D_HD void triplane_forward_point(int64_t p, const float* planes_cl, const float* points,
                                   float* out, int64_t N, int C, int H, int W, bool concat) {
  int64_t b = p / N;
  const float* pt = points + p * 3;
  const int64_t plane_size = (int64_t)H * W * C;
  const int cout = concat ? 3 * C : C;
  float* o = out + p * cout;
  for (int k = 0; k < 3; ++k) {
    Footprint fp = footprint(pt[plane_axis(k, 0)], pt[plane_axis(k, 1)], H, W);
    float wx[2] = {1.f - fp.wx1, fp.wx1}, wy[2] = {1.f - fp.wy1, fp.wy1};
    const float* base = planes_cl + (b * 3 + k) * plane_size;
    float* ok = concat ? o + k * C : o;
    for (int j = 0; j < 4; ++j) {
      if (!fp.valid[j]) continue;
      float w = wx[j & 1] * wy[j >> 1];
      const float* src = base + fp.off[j] * C;
      for (int c = 0; c < C; ++c) ok[c] += w * src[c];  // out is zero-initialised
    }
  }
}

// One thread per point. grad_planes_cl (channels-last) gets atomic adds; grad_points is
// written (not accumulated). Either may be null when not needed.
T3D_HD void triplane_backward_point(int64_t p, const float* planes_cl, const float* points,
                                    const float* grad_out, float* grad_planes_cl, float* grad_points,
                                    int64_t N, int C, int H, int W, bool concat) {
  int64_t b = p / N;
  const float* pt = points + p * 3;
  const int64_t plane_size = (int64_t)H * W * C;
  const int cout = concat ? 3 * C : C;
  const float* g = grad_out + p * cout;
  float gp[3] = {0.f, 0.f, 0.f};
  for (int k = 0; k < 3; ++k) {
    Footprint fp = footprint(pt[plane_axis(k, 0)], pt[plane_axis(k, 1)], H, W);
    float wx[2] = {1.f - fp.wx1, fp.wx1}, wy[2] = {1.f - fp.wy1, fp.wy1};
    const float* gk = concat ? g + k * C : g;
    if (grad_planes_cl) {
      float* gbase = grad_planes_cl + (b * 3 + k) * plane_size;
      for (int j = 0; j < 4; ++j) {
        float w = wx[j & 1] * wy[j >> 1];
        if (!fp.valid[j] || w == 0.f) continue;
        float* dst = gbase + fp.off[j] * C;
        for (int c = 0; c < C; ++c) atomic_add(dst + c, w * gk[c]);
      }
    }
    if (grad_points) {
      // d val / d ix = sum_j v_j * dwx_j * wy_j ; d val / d iy likewise.
      const float* base = planes_cl + (b * 3 + k) * plane_size;
      float dix = 0.f, diy = 0.f;
      for (int j = 0; j < 4; ++j) {
        if (!fp.valid[j]) continue;
        const float* src = base + fp.off[j] * C;
        float dot = 0.f;
        for (int c = 0; c < C; ++c) dot += gk[c] * src[c];
        float sx = (j & 1) ? 1.f : -1.f, sy = (j >> 1) ? 1.f : -1.f;
        dix += sx * wy[j >> 1] * dot;
        diy += sy * wx[j & 1] * dot;
      }
      gp[plane_axis(k, 0)] += dix * 0.5f * W;
      gp[plane_axis(k, 1)] += diy * 0.5f * H;
    }
  }
  if (grad_points) {
    float* d = grad_points + p * 3;
    d[0] = gp[0]; d[1] = gp[1]; d[2] = gp[2];
  }
}

// ---------------------------------------------------------------- ray compositing
// One thread per ray r: weights, transmittance, depth, alpha.
T3D_HD void composite_forward_ray(int64_t r, const float* sigmas, const float* t_vals,
                                  const float* deltas, float* weights, float* trans,
                                  float* depth, float* alpha, int S) {
  const int64_t o = r * S;
  float excl = 0.f, d = 0.f, a = 0.f;
  for (int s = 0; s < S; ++s) {
    float tau = sigmas[o + s] * deltas[o + s];
    float T = expf(-excl);
    float w = T * (-expm1f(-tau));
    trans[o + s] = T;
    weights[o + s] = w;
    d += w * t_vals[o + s];
    a += w;
    excl += tau;
  }
  depth[r] = d;
  alpha[r] = a;
}

// One thread per (ray, channel) i = r * C + c: out[r, c] = sum_s w[r, s] f[r, s, c].
T3D_HD void composite_features_elem(int64_t i, const float* weights, const float* features,
                                    float* out, int S, int C) {
  int64_t r = i / C;
  int c = (int)(i - r * C);
  const float* w = weights + r * S;
  const float* f = features + r * S * C + c;
  float acc = 0.f;
  for (int s = 0; s < S; ++s) acc += w[s] * f[(int64_t)s * C];
  out[i] = acc;
}

// One thread per sample i = r * S + s: total upstream gradient on the weight w[r, s]
// (weights + features + depth + alpha paths); also grad_features when requested.
T3D_HD void composite_backward_sample(int64_t i, const float* features, const float* t_vals,
                                      const float* weights, const float* g_weights,
                                      const float* g_feat, const float* g_depth,
                                      const float* g_alpha, float* gw_total, float* g_features,
                                      int S, int C) {
  int64_t r = i / S;
  const float* f = features + i * C;
  const float* gf = g_feat + r * C;
  float dot = 0.f;
  for (int c = 0; c < C; ++c) dot += gf[c] * f[c];
  if (g_features) {
    float w = weights[i];
    float* gfo = g_features + i * C;
    for (int c = 0; c < C; ++c) gfo[c] = w * gf[c];
  }
  gw_total[i] = g_weights[i] + dot + g_depth[r] * t_vals[i] + g_alpha[r];
}

// One thread per ray: reverse scan. With tau_k = sigma_k delta_k,
//   dL/dtau_k = gw_k T_k exp(-tau_k) - sum_{i>k} (gw_i w_i + gT_i T_i).
// Outputs (each may be null): grad sigmas, grad deltas, grad t_vals.
T3D_HD void composite_backward_ray(int64_t r, const float* sigmas, const float* deltas,
                                   const float* weights, const float* trans,
                                   const float* gw_total, const float* g_trans, const float* g_depth,
                                   float* g_sigmas, float* g_deltas, float* g_tvals, int S) {
  const int64_t o = r * S;
  float suffix = 0.f;
  const float gd = g_depth[r];
  for (int s = S - 1; s >= 0; --s) {
    float sig = sigmas[o + s], del = deltas[o + s];
    float T = trans[o + s], w = weights[o + s], gw = gw_total[o + s];
    float dtau = gw * T * expf(-sig * del) - suffix;
    suffix += gw * w + g_trans[o + s] * T;
    if (g_sigmas) g_sigmas[o + s] = dtau * del;
    if (g_deltas) g_deltas[o + s] = dtau * sig;
    if (g_tvals) g_tvals[o + s] = gd * w;
  }
}

}  // namespace t3d
