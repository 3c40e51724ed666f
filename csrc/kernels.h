#pragma once
// The interface between the device-independent host code (csrc/host_ops.cpp: checks, shapes,
// allocation) and a back end's kernels. Every tensor handed to a kernel is contiguous, on the
// back end's device, already validated, and viewed as the flat shapes given below:
//   R = rows (batch), J / E = elements reduced per row, L = samples, Rx = rows of x.
//
// Each kernel's signature is written once, in AEVB_KERNELS: the Kernels table's members, each
// back end's declarations (AEVB_DECLARE_KERNELS) and each back end's table
// (AEVB_KERNEL_TABLE) are all generated from it, so a new kernel is one entry here plus its
// definitions in csrc/cpu and csrc/cuda.
#include <ATen/core/Tensor.h>

namespace aevb_fast {

using KernelTensor = const at::Tensor&;

// X(name, parameter list)
#define AEVB_KERNELS(X)                                                                          \
  /* mu, logvar: (R, J). eps: (L, R, J), or undefined to draw noise from seed (int64 [key,     \
     offset]). Writes z: (L, R, J) (L may be 0) and, if defined, kl: (R) in the accumulation    \
     dtype. */                                                                                   \
  X(sample_forward, (KernelTensor mu, KernelTensor logvar, KernelTensor eps, KernelTensor seed,  \
                     KernelTensor z, KernelTensor kl))                                           \
  /* grad_z: (L, R, J); grad_kl: (R) or undefined. Writes grad_mu, grad_logvar: (R, J). */      \
  X(sample_backward, (KernelTensor grad_z, KernelTensor grad_kl, KernelTensor mu,                \
                      KernelTensor logvar, KernelTensor eps, KernelTensor seed,                  \
                      KernelTensor grad_mu, KernelTensor grad_logvar))                           \
  /* x: (Rx, E) with R % Rx == 0, row r of logits pairs with row r % Rx of x. out: (R). */      \
  X(bernoulli_forward, (KernelTensor x, KernelTensor logits, KernelTensor out))                  \
  /* grad: (R). Writes grad_logits: (R, E). */                                                   \
  X(bernoulli_backward, (KernelTensor grad, KernelTensor x, KernelTensor logits,                 \
                         KernelTensor grad_logits))                                              \
  X(gaussian_forward, (KernelTensor x, KernelTensor mean, KernelTensor logvar, KernelTensor out)) \
  X(gaussian_backward, (KernelTensor grad, KernelTensor x, KernelTensor mean, KernelTensor logvar, \
                        KernelTensor grad_mean, KernelTensor grad_logvar))                       \
  /* The epilogues of the linear heads (csrc/linear_log_prob.cpp), on one chunk of rows. x:     \
     (Rx, E) paired as above. Writes out: (R) always, and grad_logits: (R, E) when defined,     \
     scaled by grad[r] when grad (R) is defined, else by 1. */                                  \
  X(bernoulli_epilogue, (KernelTensor x, KernelTensor logits, KernelTensor grad, KernelTensor out, \
                         KernelTensor grad_logits))                                              \
  /* pre: (R, 2E), per row the mean's pre-activation a (mean = sigmoid(a)), then the            \
     log-variance; grad_pre: (R, 2E) likewise. */                                                \
  X(sigmoid_gaussian_epilogue, (KernelTensor x, KernelTensor pre, KernelTensor grad,             \
                                KernelTensor out, KernelTensor grad_pre))

#define AEVB_KERNEL_MEMBER_(name, params) void(*name) params;
struct Kernels {
  AEVB_KERNELS(AEVB_KERNEL_MEMBER_)
};

// Declares a back end's kernel functions in the namespace where it is expanded
// (aevb_fast::<ISA>::cpu, aevb_fast::cuda).
#define AEVB_KERNEL_DECLARATION_(name, params) void name params;
#define AEVB_DECLARE_KERNELS() AEVB_KERNELS(AEVB_KERNEL_DECLARATION_)

// A back end's table: every member set to the function of the same name in namespace `ns`.
#define AEVB_KERNEL_ENTRY_(name, params) table.name = &AEVB_KERNEL_NAMESPACE_::name;
#define AEVB_KERNEL_TABLE(ns)                     \
  [] {                                            \
    namespace AEVB_KERNEL_NAMESPACE_ = ns;        \
    Kernels table{};                              \
    AEVB_KERNELS(AEVB_KERNEL_ENTRY_)              \
    return table;                                 \
  }()

}  // namespace aevb_fast
