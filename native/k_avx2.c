/* AVX2 + FMA build of the kernels (compiled with -mavx2 -mfma). */
#define VW 8
#define FN(name) name##_avx2
#include "kernels.h"
#include "gemm.h"
