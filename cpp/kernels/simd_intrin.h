// simd_intrin.h — the x86 intrinsics, where they exist (HM_X86, see vecmath.h). One place for the
// include and for silencing GCC 12's AVX-512 headers, which self-initialise "undefined" vectors
// (__Y = __Y) and warn about it.
#pragma once
#include "kernels/vecmath.h"

#if HM_X86
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
