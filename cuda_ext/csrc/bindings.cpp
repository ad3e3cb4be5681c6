// Torch binding of the talk3d CUDA kernels: tensor checks, allocation, stream, launch.
// The Python wrappers (cuda_ext/triplane.py, composite.py) make inputs float32 and
// contiguous; the checks here are a second line of defence.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "launchers.h"

namespace {

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// planes_cl (B, 3, H, W, C), points (B, N, 3) -> (B, N, C or 3C)
at::Tensor triplane_forward(const at::Tensor& planes_cl, const at::Tensor& points, bool concat) {
  check_input(planes_cl, "planes");
  check_input(points, "points");
  TORCH_CHECK(planes_cl.dim() == 5 && planes_cl.size(1) == 3, "planes must be (B, 3, H, W, C)");
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3 && points.size(0) == planes_cl.size(0),
              "points must be (B, N, 3)");
  const c10::cuda::CUDAGuard guard(planes_cl.device());
  const int64_t B = planes_cl.size(0), N = points.size(1);
  const int H = (int)planes_cl.size(2), W = (int)planes_cl.size(3), C = (int)planes_cl.size(4);
  at::Tensor out = at::zeros({B, N, concat ? 3 * C : C}, planes_cl.options());
  check_launch(t3d::launch_triplane_forward(planes_cl.data_ptr<float>(), points.data_ptr<float>(),
                                            out.data_ptr<float>(), B, N, C, H, W, concat,
                                            c10::cuda::getCurrentCUDAStream()),
               "triplane forward");
  return out;
}

// -> [grad_planes_cl (B, 3, H, W, C) or undefined, grad_points (B, N, 3) or undefined]
std::vector<at::Tensor> triplane_backward(const at::Tensor& planes_cl, const at::Tensor& points,
                                          const at::Tensor& grad_out, bool concat,
                                          bool need_planes, bool need_points) {
  check_input(planes_cl, "planes");
  check_input(points, "points");
  check_input(grad_out, "grad_out");
  const c10::cuda::CUDAGuard guard(planes_cl.device());
  const int64_t B = planes_cl.size(0), N = points.size(1);
  const int H = (int)planes_cl.size(2), W = (int)planes_cl.size(3), C = (int)planes_cl.size(4);
  TORCH_CHECK(grad_out.dim() == 3 && grad_out.size(0) == B && grad_out.size(1) == N &&
                  grad_out.size(2) == (concat ? 3 * C : C),
              "grad_out has the wrong shape");
  at::Tensor g_planes = need_planes ? at::zeros_like(planes_cl) : at::Tensor();
  at::Tensor g_points = need_points ? at::zeros_like(points) : at::Tensor();
  check_launch(t3d::launch_triplane_backward(planes_cl.data_ptr<float>(), points.data_ptr<float>(),
                                             grad_out.data_ptr<float>(), ptr_or_null(g_planes),
                                             ptr_or_null(g_points), B, N, C, H, W, concat,
                                             c10::cuda::getCurrentCUDAStream()),
               "triplane backward");
  return {g_planes, g_points};
}

// -> [weights (R, S), transmittance (R, S), features (R, C), depth (R,), alpha (R,)]
std::vector<at::Tensor> composite_forward(const at::Tensor& sigmas, const at::Tensor& features,
                                          const at::Tensor& t_vals, const at::Tensor& deltas) {
  check_input(sigmas, "sigmas");
  check_input(features, "features");
  check_input(t_vals, "t_vals");
  check_input(deltas, "deltas");
  TORCH_CHECK(sigmas.dim() == 2 && features.dim() == 3, "sigmas must be (R, S), features (R, S, C)");
  TORCH_CHECK(features.size(0) == sigmas.size(0) && features.size(1) == sigmas.size(1) &&
                  t_vals.sizes() == sigmas.sizes() && deltas.sizes() == sigmas.sizes(),
              "composite inputs disagree in shape");
  const c10::cuda::CUDAGuard guard(sigmas.device());
  const int64_t R = sigmas.size(0);
  const int S = (int)sigmas.size(1), C = (int)features.size(2);
  at::Tensor weights = at::empty_like(sigmas);
  at::Tensor trans = at::empty_like(sigmas);
  at::Tensor out = at::zeros({R, C}, sigmas.options());
  at::Tensor depth = at::zeros({R}, sigmas.options());
  at::Tensor alpha = at::zeros({R}, sigmas.options());
  check_launch(t3d::launch_composite_forward(
                   sigmas.data_ptr<float>(), features.data_ptr<float>(), t_vals.data_ptr<float>(),
                   deltas.data_ptr<float>(), weights.data_ptr<float>(), trans.data_ptr<float>(),
                   out.data_ptr<float>(), depth.data_ptr<float>(), alpha.data_ptr<float>(), R, S, C,
                   c10::cuda::getCurrentCUDAStream()),
               "composite forward");
  return {weights, trans, out, depth, alpha};
}

// -> [grad_sigmas, grad_features, grad_t_vals, grad_deltas] (undefined when not needed)
std::vector<at::Tensor> composite_backward(const at::Tensor& sigmas, const at::Tensor& features,
                                           const at::Tensor& t_vals, const at::Tensor& deltas,
                                           const at::Tensor& weights, const at::Tensor& trans,
                                           const at::Tensor& g_weights, const at::Tensor& g_trans,
                                           const at::Tensor& g_feat, const at::Tensor& g_depth,
                                           const at::Tensor& g_alpha, std::vector<bool> needs) {
  for (const auto* t : {&sigmas, &features, &t_vals, &deltas, &weights, &trans, &g_weights,
                        &g_trans, &g_feat, &g_depth, &g_alpha}) {
    check_input(*t, "composite backward input");
  }
  TORCH_CHECK(needs.size() == 4, "needs must have 4 flags");
  const c10::cuda::CUDAGuard guard(sigmas.device());
  const int64_t R = sigmas.size(0);
  const int S = (int)sigmas.size(1), C = (int)features.size(2);
  at::Tensor scratch = at::empty_like(sigmas);
  at::Tensor g_sig = needs[0] ? at::empty_like(sigmas) : at::Tensor();
  at::Tensor g_f = needs[1] ? at::empty_like(features) : at::Tensor();
  at::Tensor g_t = needs[2] ? at::empty_like(sigmas) : at::Tensor();
  at::Tensor g_d = needs[3] ? at::empty_like(sigmas) : at::Tensor();
  check_launch(t3d::launch_composite_backward(
                   sigmas.data_ptr<float>(), features.data_ptr<float>(), t_vals.data_ptr<float>(),
                   deltas.data_ptr<float>(), weights.data_ptr<float>(), trans.data_ptr<float>(),
                   g_weights.data_ptr<float>(), g_trans.data_ptr<float>(), g_feat.data_ptr<float>(),
                   g_depth.data_ptr<float>(), g_alpha.data_ptr<float>(), scratch.data_ptr<float>(),
                   ptr_or_null(g_sig), ptr_or_null(g_f), ptr_or_null(g_t), ptr_or_null(g_d), R, S,
                   C, c10::cuda::getCurrentCUDAStream()),
               "composite backward");
  return {g_sig, g_f, g_t, g_d};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "talk3d fused volume-rendering kernels (triplane sampling, ray compositing)";
  m.def("triplane_forward", &triplane_forward, "triplane bilinear sampling, forward");
  m.def("triplane_backward", &triplane_backward, "triplane bilinear sampling, backward");
  m.def("composite_forward", &composite_forward, "ray compositing, forward");
  m.def("composite_backward", &composite_backward, "ray compositing, backward");
}
