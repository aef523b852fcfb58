// A 2-D convolution and its two gradients by oneDNN, as an XLA FFI handler for XLA:CPU.
// Built and registered by bloodcell_jax/models/onednn.py; layouts are JAX's row-major NHWC
// images and HWIO kernels. `kind` picks the computation:
//   0: out = conv(a = x, b = kernel)
//   1: out = d loss / d x, from a = d loss / d y and b = kernel
//   2: out = d loss / d kernel, from a = x and b = d loss / d y
// Padding is explicit (top, left, bottom, right). `groups` > 1 is a grouped convolution (XLA's
// feature_group_count): the kernel is (KH, KW, C_in / groups, C_out), each group's outputs
// consecutive, as in XLA. float32 and bfloat16; the kernel gradient of a bfloat16 convolution
// is accumulated in float32 by oneDNN before it is rounded.

#include <cstdint>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// `user` (a plain-layout buffer) in the layout the primitive wants, copied only if it differs.
dnnl::memory InLayout(dnnl::memory user, const dnnl::memory::desc& wanted,
                      dnnl::stream& stream) {
  if (user.get_desc() == wanted) return user;
  dnnl::memory converted(wanted, Engine());
  dnnl::reorder(user, converted).execute(stream, user, converted);
  return converted;
}

// The kernel's description: (O, I, KH, KW) for one group, (G, O / G, I, KH, KW) for G; its
// layout (`any`: the primitive's choice) or the strides of XLA's row-major HWIO array.
dnnl::memory::desc KernelDesc(ffi::Span<const int64_t> hwio, int64_t groups,
                              dnnl::memory::data_type type, bool any) {
  int64_t kh = hwio[0], kw = hwio[1], in = hwio[2], out = hwio[3];
  if (groups == 1) {
    dims shape{out, in, kh, kw};
    return any ? dnnl::memory::desc(shape, type, tag::any)
               : dnnl::memory::desc(shape, type, tag::hwio);
  }
  dims shape{groups, out / groups, in, kh, kw};
  if (any) return dnnl::memory::desc(shape, type, tag::any);
  return dnnl::memory::desc(shape, type, dims{out / groups, 1, out, kw * in * out, in * out});
}

ffi::Error Convolve(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                    int64_t kind, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                    int64_t pad_left, int64_t pad_bottom, int64_t pad_right, int64_t groups) {
  dnnl::memory::data_type type;
  switch (out->element_type()) {
    case ffi::F32: type = dnnl::memory::data_type::f32; break;
    case ffi::BF16: type = dnnl::memory::data_type::bf16; break;
    default: return ffi::Error::InvalidArgument("onednn_conv: float32 or bfloat16 only");
  }
  if (kind < 0 || kind > 2) return ffi::Error::InvalidArgument("onednn_conv: kind is 0, 1 or 2");
  // x, kernel and y shapes from whichever buffers hold them.
  auto image = kind == 1 ? out->dimensions() : a.dimensions();
  auto kernel = kind == 0 ? b.dimensions() : (kind == 1 ? b.dimensions() : out->dimensions());
  auto result = kind == 0 ? out->dimensions() : (kind == 1 ? a.dimensions() : b.dimensions());
  if (image.size() != 4 || kernel.size() != 4 || result.size() != 4)
    return ffi::Error::InvalidArgument("onednn_conv: NHWC images and HWIO kernels only");
  try {
    dnnl::engine& engine = Engine();
    dnnl::stream stream(engine);
    dnnl::memory::desc x_desc({image[0], image[3], image[1], image[2]}, type, tag::nhwc);
    dnnl::memory::desc y_desc({result[0], result[3], result[1], result[2]}, type, tag::nhwc);
    if (groups < 1 || kernel[3] % groups != 0 || kernel[2] * groups != image[3])
      return ffi::Error::InvalidArgument("onednn_conv: channels do not divide into the groups");
    dnnl::memory::desc kernel_desc = KernelDesc(kernel, groups, type, false);
    dnnl::memory::desc any_kernel = KernelDesc(kernel, groups, type, true);
    dims strides{stride_h, stride_w}, before{pad_top, pad_left}, after{pad_bottom, pad_right};
    auto forward = dnnl::convolution_forward::primitive_desc(
        engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x_desc,
        any_kernel, y_desc, strides, before, after);
    if (kind == 0) {
      dnnl::memory x(x_desc, engine, a.untyped_data()), y(y_desc, engine, out->untyped_data());
      dnnl::memory w = InLayout(dnnl::memory(kernel_desc, engine, b.untyped_data()),
                                forward.weights_desc(), stream);
      dnnl::convolution_forward(forward).execute(
          stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
    } else if (kind == 1) {
      auto backward = dnnl::convolution_backward_data::primitive_desc(
          engine, dnnl::algorithm::convolution_direct, x_desc, any_kernel, y_desc, strides,
          before, after, forward);
      dnnl::memory dx(x_desc, engine, out->untyped_data()), dy(y_desc, engine, a.untyped_data());
      dnnl::memory w = InLayout(dnnl::memory(kernel_desc, engine, b.untyped_data()),
                                backward.weights_desc(), stream);
      dnnl::convolution_backward_data(backward).execute(
          stream, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, dx}});
    } else {
      auto backward = dnnl::convolution_backward_weights::primitive_desc(
          engine, dnnl::algorithm::convolution_direct, x_desc, any_kernel, y_desc, strides,
          before, after, forward);
      dnnl::memory x(x_desc, engine, a.untyped_data()), dy(y_desc, engine, b.untyped_data());
      dnnl::memory dw_user(kernel_desc, engine, out->untyped_data());
      dnnl::memory dw = backward.diff_weights_desc() == kernel_desc
                            ? dw_user : dnnl::memory(backward.diff_weights_desc(), engine);
      dnnl::convolution_backward_weights(backward).execute(
          stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, dw}});
      if (dw != dw_user) dnnl::reorder(dw, dw_user).execute(stream, dw, dw_user);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    BloodcellJaxOnednnConv, Convolve,
    ffi::Ffi::Bind()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("kind")
        .Attr<int64_t>("stride_h")
        .Attr<int64_t>("stride_w")
        .Attr<int64_t>("pad_top")
        .Attr<int64_t>("pad_left")
        .Attr<int64_t>("pad_bottom")
        .Attr<int64_t>("pad_right")
        .Attr<int64_t>("groups"));
