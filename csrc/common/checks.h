#pragma once
// Input checks that name the operator, the argument and what was expected. They raise
// ValueError in Python (TORCH_CHECK_VALUE).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace aevb_fast {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// float32 for float16/bfloat16/float32, float64 for float64: the dtype of reduced outputs.
inline at::ScalarType accumulate_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_float_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK_VALUE(is_supported_float(t.scalar_type()), op, ": ", name,
                    " must be a float32, float64, float16 or bfloat16 tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() >= 1, op, ": ", name,
                    " must have at least one dimension, got a 0-dim tensor");
}

inline void check_same_dtype_device(const char* op, const char* name, const at::Tensor& t,
                                    const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ",
                    t.scalar_type(), " but ", ref_name, " has dtype ", ref.scalar_type(),
                    "; they must match");
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ",
                    ref_name, " is on ", ref.device(), "; they must be on the same device");
}

inline void check_same_shape(const char* op, const char* name, const at::Tensor& t,
                             const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), op, ": ", name, " has shape ", t.sizes(), " but ",
                    ref_name, " has shape ", ref.sizes(), "; they must match");
}

}  // namespace aevb_fast
