// The module aevb_fast._C: loading it registers the operators, torch.ops.aevb_fast (each op's
// schema, host code and autograd in csrc/ops/<op>.cpp; its kernels in csrc/cpu and csrc/cuda),
// and build_info reports how it was built.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "kernel.h"

// The namespace is ours; the ops are added by the TORCH_LIBRARY_FRAGMENTs of csrc/ops/.
TORCH_LIBRARY(aevb_fast, m) {}

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
