// The data transforms of Winograd's F(m x m, 3x3) convolution, alone or followed by 2x2 max
// pooling (models/winograd.py), as XLA FFI handlers for XLA:CPU, m = 2 or 4. XLA's batched
// products do the multiplications; these do the rest, each in one pass over memory, where
// XLA's fusions of the same sums take several (stacks of 16 or 36 separately computed cells).
//
// With A = m + 2 (the tile size), T x S tiles per image and P = N * T * S, all float32:
//   WinogradInput          x (N, m*T + 2, m*S + 2, C), padded -> tiles (A*A, P, C) = B^T d B
//   WinogradInputGrad      d tiles (A*A, P, C) -> d x (N, m*T + 2, m*S + 2, C): B . B^T of
//                          each tile, the overlapping tiles summed
//   WinogradOutput         products (A*A, P, F) -> y (N, m*T, m*S, F) = A^T M A
//   WinogradOutputGrad     g (N, m*T, m*S, F) -> d products (A*A, P, F) = A g A^T
//   WinogradOutputMax      products (A*A, P, F) -> y (N, m/2*T, m/2*S, F), the largest of
//                          each 2x2 window of A^T M A, and which (same shape, int8) of its
//                          four it was (the first on a tie): 0 (0, 0), 1 (0, 1), 2 (1, 0),
//                          3 (1, 1)
//   WinogradOutputMaxGrad  g, which (N, m/2*T, m/2*S, F) -> d products (A*A, P, F): each
//                          output gradient routed to its window's maximum, then as above
// Channels are innermost (contiguous, 16-float vectors); images or chunks of tiles are spread
// over the cores with OpenMP.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <int M>
struct Algorithm;

template <>
struct Algorithm<2> {  // the points 0, 1, -1
  static constexpr int A = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

template <>
struct Algorithm<4> {  // the points 0, 1, -1, 2, -2
  static constexpr int A = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0},
                                     {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// Channels go through the transforms kLanes at a time, as one vector (GCC's vector extension:
// AVX-512 where compiled for it, else several narrower registers).
constexpr int kLanes = 16;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(int32_t))));
template <int R, int C>
using Lanes = Vec[R][C];

// L[r][i], or L[i][r] (`Transposed`).
template <bool Transposed, int Rows, int Columns>
inline float Coefficient(const float (&l)[Rows][Columns], int r, int i) {
  if constexpr (Transposed) return l[i][r]; else return l[r][i];
}

// out = L in L^T (`Transposed`: L^T in L), L being `Rows` x `K` (`Transposed`: K x Rows). The
// coefficients are constants, so the unrolled sums leave out the zeros.
template <int R, int K, bool Transposed, int Rows, int Columns>
inline void BothSides(const float (&l)[Rows][Columns], const Lanes<K, K>& in, Lanes<R, R>& out) {
  Vec rows[R][K];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < K; ++c) {
      Vec sum = {};
      for (int i = 0; i < K; ++i) {
        const float a = Coefficient<Transposed>(l, r, i);
        if (a != 0) sum += a * in[i][c];
      }
      rows[r][c] = sum;
    }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < R; ++c) {
      Vec sum = {};
      for (int k = 0; k < K; ++k) {
        const float a = Coefficient<Transposed>(l, c, k);
        if (a != 0) sum += a * rows[r][k];
      }
      out[r][c] = sum;
    }
}

// Reads `count` <= kLanes values from `from`, zero beyond.
inline Vec Load(const float* from, int count) {
  Vec v = {};
  if (count == kLanes) std::memcpy(&v, from, sizeof(v));  // one vector load
  else std::memcpy(&v, from, sizeof(float) * count);
  return v;
}

inline void Store(const Vec& v, int count, float* to) {
  if (count == kLanes) std::memcpy(to, &v, sizeof(v));
  else std::memcpy(to, &v, sizeof(float) * count);
}

// Tiles go through a transform in chunks whose cells fit in the core's cache (kChunkBytes):
// each cell of a chunk is one contiguous run of the (A*A, P, C) array, so a chunk is read or
// written as A*A sequential runs, not A*A streams advancing together (which defeat the
// prefetchers: 3x slower).
constexpr int64_t kChunkBytes = 192 * 1024;

inline int64_t ChunkTiles(int cells, int64_t channels) {
  const int64_t tiles = kChunkBytes / (sizeof(float) * cells * channels);
  return tiles < 1 ? 1 : tiles;
}

// Copies `tiles` consecutive tiles from `first` of each cell of (cells, P, C) `from` into the
// chunk buffer (cells, tiles, C), or back (`to_cells`).
inline void CopyChunk(float* cells_array, float* chunk, int cells, int64_t p, int64_t first,
                      int64_t tiles, int64_t channels, bool to_cells) {
  const size_t bytes = sizeof(float) * tiles * channels;
  for (int cell = 0; cell < cells; ++cell) {
    float* run = cells_array + (cell * p + first) * channels;
    float* local = chunk + cell * tiles * channels;
    if (to_cells) std::memcpy(run, local, bytes); else std::memcpy(local, run, bytes);
  }
}

template <int M>
void Input(const float* in, int64_t n, int64_t height, int64_t width, int64_t channels,
           float* out) {
  using Alg = Algorithm<M>;
  constexpr int A = Alg::A;
  const int64_t t = (height - 2) / M, s = (width - 2) / M, p = n * t * s;
  const int64_t chunk = ChunkTiles(A * A, channels), chunks = (p + chunk - 1) / chunk;
#pragma omp parallel
  {
    std::vector<float> buffer(A * A * chunk * channels);
#pragma omp for schedule(static)
    for (int64_t index = 0; index < chunks; ++index) {
      const int64_t first = index * chunk, count_tiles = std::min(chunk, p - first);
      for (int64_t k = 0; k < count_tiles; ++k) {
        const int64_t tile = first + k;
        const int64_t image = tile / (t * s), row = tile / s % t, col = tile % s;
        const float* corner = in + ((image * height + row * M) * width + col * M) * channels;
        for (int64_t c = 0; c < channels; c += kLanes) {
          const int count = channels - c < kLanes ? channels - c : kLanes;
          Vec d[A][A], v[A][A];
          for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j)
              d[i][j] = Load(corner + (i * width + j) * channels + c, count);
          BothSides<A, A, false>(Alg::BT, d, v);
          for (int u = 0; u < A; ++u)
            for (int w = 0; w < A; ++w)
              Store(v[u][w], count, &buffer[((u * A + w) * count_tiles + k) * channels + c]);
        }
      }
      CopyChunk(out, buffer.data(), A * A, p, first, count_tiles, channels, true);
    }
  }
}

// The largest output of each 2x2 window of an M x M block, the first on a tie, and which of
// its four it was (0 (0, 0), 1 (0, 1), 2 (1, 0), 3 (1, 1)); `at(i, j)`: where window (i, j)
// goes in y and route.
template <int M, typename At>
inline void WriteMaxima(const Vec (&o)[M][M], int count, At at, float* y, int8_t* route) {
  for (int i = 0; i < M / 2; ++i)
    for (int j = 0; j < M / 2; ++j) {
      Vec top = o[2 * i][2 * j];
      IVec place = {};
      const Vec* others[3] = {&o[2 * i][2 * j + 1], &o[2 * i + 1][2 * j],
                              &o[2 * i + 1][2 * j + 1]};
      for (int which = 1; which <= 3; ++which) {
        const IVec larger = *others[which - 1] > top;
        place = larger ? which : place;
        top = larger ? *others[which - 1] : top;
      }
      const int64_t offset = at(i, j);
      Store(top, count, y + offset);
      for (int lane = 0; lane < count; ++lane) route[offset + lane] = place[lane];
    }
}

// The block's output gradient from the windows' gradients, each at its window's maximum.
template <int M, typename At>
inline void ReadRouted(const float* grad, const int8_t* route, int count, At at,
                       Vec (&o)[M][M]) {
  const Vec zero = {};
  for (int i = 0; i < M / 2; ++i)
    for (int j = 0; j < M / 2; ++j) {
      const int64_t offset = at(i, j);
      const Vec value = Load(grad + offset, count);
      IVec place = {};
      for (int lane = 0; lane < count; ++lane) place[lane] = route[offset + lane];
      o[2 * i][2 * j] = place == 0 ? value : zero;
      o[2 * i][2 * j + 1] = place == 1 ? value : zero;
      o[2 * i + 1][2 * j] = place == 2 ? value : zero;
      o[2 * i + 1][2 * j + 1] = place == 3 ? value : zero;
    }
}

// y = A^T M A for every tile; `Pooled`: each 2x2 window's largest output and its route, y and
// route (N, m/2*T, m/2*S, F); else every output, y (N, m*T, m*S, F).
template <int M, bool Pooled>
void Output(const float* products, int64_t n, int64_t rows, int64_t cols, int64_t features,
            float* y, int8_t* route) {
  using Alg = Algorithm<M>;
  constexpr int A = Alg::A, H = Pooled ? M / 2 : M;  // values per tile and side in y
  const int64_t t = rows / H, s = cols / H, p = n * t * s;
  const int64_t chunk = ChunkTiles(A * A, features), chunks = (p + chunk - 1) / chunk;
  float* in = const_cast<float*>(products);  // only read
#pragma omp parallel
  {
    std::vector<float> buffer(A * A * chunk * features);
#pragma omp for schedule(static)
    for (int64_t index = 0; index < chunks; ++index) {
      const int64_t first = index * chunk, count_tiles = std::min(chunk, p - first);
      CopyChunk(in, buffer.data(), A * A, p, first, count_tiles, features, false);
      for (int64_t k = 0; k < count_tiles; ++k) {
        const int64_t tile = first + k;
        const int64_t image = tile / (t * s), row = tile / s % t, col = tile % s;
        for (int64_t f = 0; f < features; f += kLanes) {
          const int count = features - f < kLanes ? features - f : kLanes;
          auto at = [&](int i, int j) {
            return ((image * rows + row * H + i) * cols + col * H + j) * features + f;
          };
          Vec m[A][A], o[M][M];
          for (int u = 0; u < A; ++u)
            for (int w = 0; w < A; ++w)
              m[u][w] = Load(&buffer[((u * A + w) * count_tiles + k) * features + f], count);
          BothSides<M, A, false>(Alg::AT, m, o);
          if constexpr (Pooled) {
            WriteMaxima<M>(o, count, at, y, route);
          } else {
            for (int i = 0; i < M; ++i)
              for (int j = 0; j < M; ++j) Store(o[i][j], count, y + at(i, j));
          }
        }
      }
    }
  }
}

// The products' gradient from y's (Output<M, Pooled>'s transpose).
template <int M, bool Pooled>
void OutputGrad(const float* grad, const int8_t* route, int64_t n, int64_t rows, int64_t cols,
                int64_t features, float* out) {
  using Alg = Algorithm<M>;
  constexpr int A = Alg::A, H = Pooled ? M / 2 : M;
  const int64_t t = rows / H, s = cols / H, p = n * t * s;
  const int64_t chunk = ChunkTiles(A * A, features), chunks = (p + chunk - 1) / chunk;
#pragma omp parallel
  {
    std::vector<float> buffer(A * A * chunk * features);
#pragma omp for schedule(static)
    for (int64_t index = 0; index < chunks; ++index) {
      const int64_t first = index * chunk, count_tiles = std::min(chunk, p - first);
      for (int64_t k = 0; k < count_tiles; ++k) {
        const int64_t tile = first + k;
        const int64_t image = tile / (t * s), row = tile / s % t, col = tile % s;
        for (int64_t f = 0; f < features; f += kLanes) {
          const int count = features - f < kLanes ? features - f : kLanes;
          auto at = [&](int i, int j) {
            return ((image * rows + row * H + i) * cols + col * H + j) * features + f;
          };
          Vec o[M][M], m[A][A];
          if constexpr (Pooled) {
            ReadRouted<M>(grad, route, count, at, o);
          } else {
            for (int i = 0; i < M; ++i)
              for (int j = 0; j < M; ++j) o[i][j] = Load(grad + at(i, j), count);
          }
          BothSides<A, M, true>(Alg::AT, o, m);
          for (int u = 0; u < A; ++u)
            for (int w = 0; w < A; ++w)
              Store(m[u][w], count, &buffer[((u * A + w) * count_tiles + k) * features + f]);
        }
      }
      CopyChunk(out, buffer.data(), A * A, p, first, count_tiles, features, true);
    }
  }
}

template <int M>
void InputGrad(const float* d_tiles, int64_t n, int64_t height, int64_t width, int64_t channels,
               float* out) {
  using Alg = Algorithm<M>;
  constexpr int A = Alg::A;
  const int64_t t = (height - 2) / M, s = (width - 2) / M, p = n * t * s;
  float* in = const_cast<float*>(d_tiles);  // only read
  // One image per thread, a row of tiles at a time: its tiles overlap, another image's do not.
#pragma omp parallel
  {
    std::vector<float> buffer(A * A * s * channels);
#pragma omp for schedule(static)
    for (int64_t image = 0; image < n; ++image) {
      float* plane = out + image * height * width * channels;
      std::memset(plane, 0, sizeof(float) * height * width * channels);
      for (int64_t row = 0; row < t; ++row) {
        CopyChunk(in, buffer.data(), A * A, p, (image * t + row) * s, s, channels, false);
        for (int64_t col = 0; col < s; ++col) {
          float* corner = plane + (row * M * width + col * M) * channels;
          for (int64_t c = 0; c < channels; c += kLanes) {
            const int count = channels - c < kLanes ? channels - c : kLanes;
            Vec v[A][A], d[A][A];
            for (int u = 0; u < A; ++u)
              for (int w = 0; w < A; ++w)
                v[u][w] = Load(&buffer[((u * A + w) * s + col) * channels + c], count);
            BothSides<A, A, true>(Alg::BT, v, d);
            for (int i = 0; i < A; ++i)
              for (int j = 0; j < A; ++j) {
                float* at = corner + (i * width + j) * channels + c;
                Store(Load(at, count) + d[i][j], count, at);
              }
          }
        }
      }
    }
  }
}

// The block size m is an attribute: one handler per transform.
template <typename Call>
ffi::Error ByBlock(int64_t block, Call call) {
  switch (block) {
    case 2: call(std::integral_constant<int, 2>()); return ffi::Error::Success();
    case 4: call(std::integral_constant<int, 4>()); return ffi::Error::Success();
    default: return ffi::Error::InvalidArgument("winograd: block is 2 or 4");
  }
}

ffi::Error InputHandler(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> tiles,
                        int64_t block) {
  auto d = x.dimensions();
  return ByBlock(block, [&](auto m) {
    Input<m()>(x.typed_data(), d[0], d[1], d[2], d[3], tiles->typed_data());
  });
}

ffi::Error OutputHandler(ffi::Buffer<ffi::F32> products, ffi::ResultBuffer<ffi::F32> y,
                         int64_t block) {
  auto d = y->dimensions();
  return ByBlock(block, [&](auto m) {
    Output<m(), false>(products.typed_data(), d[0], d[1], d[2], d[3], y->typed_data(), nullptr);
  });
}

ffi::Error OutputMaxHandler(ffi::Buffer<ffi::F32> products, ffi::ResultBuffer<ffi::F32> y,
                            ffi::ResultBuffer<ffi::S8> which, int64_t block) {
  auto d = y->dimensions();
  return ByBlock(block, [&](auto m) {
    Output<m(), true>(products.typed_data(), d[0], d[1], d[2], d[3], y->typed_data(),
                      which->typed_data());
  });
}

ffi::Error OutputGradHandler(ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> d_products,
                             int64_t block) {
  auto d = g.dimensions();
  return ByBlock(block, [&](auto m) {
    OutputGrad<m(), false>(g.typed_data(), nullptr, d[0], d[1], d[2], d[3],
                           d_products->typed_data());
  });
}

ffi::Error OutputMaxGradHandler(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::S8> which,
                                ffi::ResultBuffer<ffi::F32> d_products, int64_t block) {
  auto d = g.dimensions();
  return ByBlock(block, [&](auto m) {
    OutputGrad<m(), true>(g.typed_data(), which.typed_data(), d[0], d[1], d[2], d[3],
                          d_products->typed_data());
  });
}

ffi::Error InputGradHandler(ffi::Buffer<ffi::F32> d_tiles, ffi::ResultBuffer<ffi::F32> dx,
                            int64_t block) {
  auto d = dx->dimensions();
  return ByBlock(block, [&](auto m) {
    InputGrad<m()>(d_tiles.typed_data(), d[0], d[1], d[2], d[3], dx->typed_data());
  });
}

// The binding of the transforms with one float32 array in and one out.
auto FloatToFloat() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("block");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BloodcellJaxWinogradInput, InputHandler,
                              FloatToFloat());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BloodcellJaxWinogradOutput, OutputHandler,
                              FloatToFloat());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BloodcellJaxWinogradOutputMax, OutputMaxHandler,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S8>>()
                                  .Attr<int64_t>("block"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(BloodcellJaxWinogradOutputGrad, OutputGradHandler,
                              FloatToFloat());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BloodcellJaxWinogradOutputMaxGrad, OutputMaxGradHandler,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("block"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(BloodcellJaxWinogradInputGrad, InputGradHandler,
                              FloatToFloat());
