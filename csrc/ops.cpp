// The operators' library, torch.ops.aevb_fast (schemas in schemas.h; the back ends in csrc/cpu and
// csrc/cuda implement them).
// Also the pybind11 module aevb_fast._C, which reports how this library was built.
#include <torch/extension.h>
#include <torch/library.h>

#include "autograd.h"
#include "cpu/kernel_table.h"
#include "schemas.h"

namespace {
struct MainLibrary {
  static constexpr const char* name = "aevb_fast";
};
}  // namespace

TORCH_LIBRARY(aevb_fast, m) { aevb_fast::define_schemas(m); }
TORCH_LIBRARY_IMPL(aevb_fast, Autograd, m) { aevb_fast::autograd::register_autograd<MainLibrary>(m); }

PYBIND11_MODULE(_C, m) {
  m.doc() = "aevb_fast's compiled operators (registered under torch.ops.aevb_fast)";
  m.def("build_info", [] {
    pybind11::dict info;
    info["version"] = AEVB_VERSION;
    info["torch_built_against"] = AEVB_TORCH_VERSION;
    info["cpu_isas_compiled"] = AEVB_COMPILED_ISAS;
    info["cpu_isa"] = aevb_fast::selected_cpu_isa();
#if defined(AEVB_WITH_CUDA)
    info["cuda"] = AEVB_CUDA_VERSION;
    info["cuda_archs"] = AEVB_CUDA_ARCHS;
#else
    info["cuda"] = pybind11::none();
    info["cuda_archs"] = "";
#endif
    return info;
  });
}
