/* Baseline build of the kernels for any CPU of the target architecture (SSE2 on x86-64). */
#define VW 4
#define FN(name) name##_base
#include "kernels.h"
#include "gemm.h"
