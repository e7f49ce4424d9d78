/* AVX-512 build of the kernels (compiled with -mavx512f/bw/dq/vl -mfma). */
#define VW 16
#define FN(name) name##_avx512
#include "kernels.h"
#include "gemm.h"
