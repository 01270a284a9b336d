// Deformable convolution CPU kernels of robustbench_geo (native backend, compiled path).
//
// Plain C++ (no torch headers, so it compiles in seconds); called through ctypes on raw pointers
// by robustbench_geo/ops/_deform_kernel.py, which also runs the GEMMs (torch/MKL) and splits the
// work over threads (ctypes releases the GIL). Semantics are those of _deform_native.py:
//
//   src   : zero-padded channels-last input (B, H + 2, W + 2, C), contiguous
//   off   : offsets (B, G, K, 2, L) contiguous, (dy, dx) in pixels, K = kh * kw, L = Ho * Wo
//   mask  : modulation (B, G, K, L) contiguous, or null
//   cols  : column rows (rows, K, C) for output rows [rbase, rbase + rows), row = b * L + l
//
// The bilinear weights of a (row, tap, group) are computed once and applied to C / G channels.
// Corners outside [-1, H] x [-1, W] are clamped onto the zero border, so they read 0; the
// fractional parts come from floor(), so derivatives at integer coordinates are right-handed.
#include <cmath>
#include <cstdint>

namespace {

struct Geo {
  int64_t B, C, H, W, G, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, has_mask;
  int64_t K() const { return kh * kw; }
  int64_t L() const { return Ho * Wo; }
  int64_t Cg() const { return C / G; }
};

Geo read_geo(const int64_t* p) {
  return Geo{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]};
}

template <typename T>
struct Tap {
  int64_t o[4];  // offsets in src of the four corner rows (C / G channels each): (y0,x0) (y0,x1) (y1,x0) (y1,x1)
  T ly, lx, m;   // fractional parts and modulation
};

template <typename T>
inline int64_t clamp_index(T v, int64_t hi) {
  if (!(v >= T(-1))) return -1;  // also NaN
  if (v > T(hi)) return hi;
  return static_cast<int64_t>(v);
}

// Geometry of one (row, tap, group): corner offsets into src, fractional parts, modulation.
template <typename T>
inline void tap(const Geo& g, int64_t plane, T base_y, T base_x, T dy, T dx, T m, int64_t cbase, Tap<T>& t) {
  const T py = base_y + dy, px = base_x + dx;
  const T y0f = std::floor(py), x0f = std::floor(px);
  t.ly = py - y0f;
  t.lx = px - x0f;
  t.m = m;
  const int64_t y0 = clamp_index(y0f, g.H), y1 = clamp_index(y0f + T(1), g.H);
  const int64_t x0 = clamp_index(x0f, g.W), x1 = clamp_index(x0f + T(1), g.W);
  const int64_t Wp = g.W + 2;
  t.o[0] = (plane + (y0 + 1) * Wp + (x0 + 1)) * g.C + cbase;
  t.o[1] = (plane + (y0 + 1) * Wp + (x1 + 1)) * g.C + cbase;
  t.o[2] = (plane + (y1 + 1) * Wp + (x0 + 1)) * g.C + cbase;
  t.o[3] = (plane + (y1 + 1) * Wp + (x1 + 1)) * g.C + cbase;
}

// Calls body(r, k, grp, tap, offset_index, mask_index) for every tap of rows [r0, r1); the per-row
// and per-tap index arithmetic is hoisted out of the channel loops.
template <typename T, typename Body>
inline void for_taps(const Geo& g, const T* off, const T* mask, int64_t r0, int64_t r1, Body body) {
  const int64_t K = g.K(), L = g.L(), Cg = g.Cg();
  Tap<T> t;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / L, l = r % L, ho = l / g.Wo, wo = l % g.Wo;
    const int64_t plane = b * (g.H + 2) * (g.W + 2);
    for (int64_t i = 0, k = 0; i < g.kh; ++i) {
      const T base_y = T(ho * g.sh - g.ph + i * g.dh);
      for (int64_t j = 0; j < g.kw; ++j, ++k) {
        const T base_x = T(wo * g.sw - g.pw + j * g.dw);
        for (int64_t grp = 0; grp < g.G; ++grp) {
          const int64_t mi = ((b * g.G + grp) * K + k) * L + l;  // mask index; offsets at 2 * (mi - l) + l
          const int64_t oi = 2 * (mi - l) + l;
          const T m = g.has_mask ? mask[mi] : T(1);
          tap(g, plane, base_y, base_x, off[oi], off[oi + L], m, grp * Cg, t);
          body(r, k, grp, t, oi, mi);
        }
      }
    }
  }
}

template <typename T>
void columns(const T* src, const T* off, const T* mask, T* cols, const int64_t* params, int64_t rbase,
             int64_t r0, int64_t r1) {
  const Geo g = read_geo(params);
  const int64_t K = g.K(), Cg = g.Cg();
  for_taps<T>(g, off, mask, r0, r1, [=](int64_t r, int64_t k, int64_t grp, const Tap<T> t, int64_t, int64_t) {
    const T hy = T(1) - t.ly, hx = T(1) - t.lx;
    const T w0 = hy * hx * t.m, w1 = hy * t.lx * t.m, w2 = t.ly * hx * t.m, w3 = t.ly * t.lx * t.m;
    const T* __restrict__ p0 = src + t.o[0];
    const T* __restrict__ p1 = src + t.o[1];
    const T* __restrict__ p2 = src + t.o[2];
    const T* __restrict__ p3 = src + t.o[3];
    T* __restrict__ out = cols + ((r - rbase) * K + k) * g.C + grp * Cg;
#pragma omp simd
    for (int64_t c = 0; c < Cg; ++c) out[c] = w0 * p0[c] + w1 * p1[c] + w2 * p2[c] + w3 * p3[c];
  });
}

// Offset/mask gradients (4 dot products per tap) and the input-gradient scatter for rows [r0, r1).
// Rows handled concurrently must belong to different images when grad_src is given.
template <typename T>
void backward(const T* src, const T* off, const T* mask, const T* gcols, T* grad_src, T* grad_off, T* grad_mask,
              const int64_t* params, int64_t rbase, int64_t r0, int64_t r1) {
  const Geo g = read_geo(params);
  const int64_t K = g.K(), Cg = g.Cg(), L = g.L();
  const bool dots = grad_off != nullptr || grad_mask != nullptr;
  for_taps<T>(g, off, mask, r0, r1, [=](int64_t r, int64_t k, int64_t grp, const Tap<T> t, int64_t oi, int64_t mi) {
    const T* __restrict__ gc = gcols + ((r - rbase) * K + k) * g.C + grp * Cg;
    const T hy = T(1) - t.ly, hx = T(1) - t.lx;
    if (dots) {
      const T* __restrict__ p0 = src + t.o[0];
      const T* __restrict__ p1 = src + t.o[1];
      const T* __restrict__ p2 = src + t.o[2];
      const T* __restrict__ p3 = src + t.o[3];
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t c = 0; c < Cg; ++c) {
        s0 += gc[c] * p0[c];
        s1 += gc[c] * p1[c];
        s2 += gc[c] * p2[c];
        s3 += gc[c] * p3[c];
      }
      if (grad_off != nullptr) {
        grad_off[oi] = t.m * (hx * (s2 - s0) + t.lx * (s3 - s1));
        grad_off[oi + L] = t.m * (hy * (s1 - s0) + t.ly * (s3 - s2));
      }
      if (grad_mask != nullptr) grad_mask[mi] = hy * hx * s0 + hy * t.lx * s1 + t.ly * hx * s2 + t.ly * t.lx * s3;
    }
    if (grad_src != nullptr) {
      const T w[4] = {hy * hx * t.m, hy * t.lx * t.m, t.ly * hx * t.m, t.ly * t.lx * t.m};
      for (int c4 = 0; c4 < 4; ++c4) {
        T* __restrict__ q = grad_src + t.o[c4];
        const T wc = w[c4];
#pragma omp simd
        for (int64_t c = 0; c < Cg; ++c) q[c] += wc * gc[c];
      }
    }
  });
}

}  // namespace

extern "C" {
void rbgeo_dcn_columns_f32(const float* src, const float* off, const float* mask, float* cols, const int64_t* params,
                           int64_t rbase, int64_t r0, int64_t r1) {
  columns<float>(src, off, mask, cols, params, rbase, r0, r1);
}
void rbgeo_dcn_columns_f64(const double* src, const double* off, const double* mask, double* cols,
                           const int64_t* params, int64_t rbase, int64_t r0, int64_t r1) {
  columns<double>(src, off, mask, cols, params, rbase, r0, r1);
}
void rbgeo_dcn_backward_f32(const float* src, const float* off, const float* mask, const float* gcols, float* grad_src,
                            float* grad_off, float* grad_mask, const int64_t* params, int64_t rbase, int64_t r0,
                            int64_t r1) {
  backward<float>(src, off, mask, gcols, grad_src, grad_off, grad_mask, params, rbase, r0, r1);
}
void rbgeo_dcn_backward_f64(const double* src, const double* off, const double* mask, const double* gcols,
                            double* grad_src, double* grad_off, double* grad_mask, const int64_t* params,
                            int64_t rbase, int64_t r0, int64_t r1) {
  backward<double>(src, off, mask, gcols, grad_src, grad_off, grad_mask, params, rbase, r0, r1);
}
int rbgeo_dcn_abi_version() { return 1; }
}
