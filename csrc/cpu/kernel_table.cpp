// Compiled once per instruction set: defines cpu_kernels_<ISA>().
#include "cpu/kernel_table.h"

#define AEVB_CONCAT_(a, b) a##b
#define AEVB_CONCAT(a, b) AEVB_CONCAT_(a, b)

namespace aevb_fast {

const Kernels& AEVB_CONCAT(cpu_kernels_, CPU_CAPABILITY)() {
  static const Kernels table = AEVB_KERNEL_TABLE(cpu);
  return table;
}

}  // namespace aevb_fast
