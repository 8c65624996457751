/* What the platform layer does alike on every OS: strings, and the CPU's
 * features the kernels may use (vlm_cpu_features): the x86 CPUID and XCR0
 * bits anywhere; on ARM64 the OS's word (Linux's hwcaps, Windows'
 * processor features). */
#include "platform/vlm_platform.h"

#include <stdlib.h>
#include <string.h>

char *vlm_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = (char *)malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
static uint64_t plat_xgetbv(unsigned idx) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(idx));
    return ((uint64_t)hi << 32) | lo;
}
unsigned vlm_cpu_features(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return 0;
    uint64_t xcr0 = plat_xgetbv(0);
    int ymm = (xcr0 & 6) == 6, zmm = (xcr0 & 0xe6) == 0xe6, tiles = (xcr0 & 0x60000) == 0x60000;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned b7 = b, c7 = c, d7 = d;
    if (ymm && fma && f16c && ((b7 >> 5) & 1)) f |= VLM_CPU_AVX2;
    if (zmm && ((b7 >> 16) & 1)) {
        f |= VLM_CPU_AVX512F;
        if ((c7 >> 11) & 1) f |= VLM_CPU_AVX512VNNI;
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 5) & 1) f |= VLM_CPU_AVX512BF16;
    }
    /* AMX also needs the kernel's permission (arch_prctl), asked for by the
     * kernels that use it; here: the CPU has it and XCR0 enables the tiles. */
    if (tiles && ((d7 >> 22) & 1)) f |= VLM_CPU_AMX_BF16;
    if (tiles && ((d7 >> 25) & 1)) f |= VLM_CPU_AMX_INT8;
    return f;
}
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
unsigned vlm_cpu_features(void) {
    /* the kernel's hwcaps: HWCAP_ASIMDDP, HWCAP2_I8MM, HWCAP2_BF16 */
    unsigned long h = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
    unsigned f = VLM_CPU_NEON;
    if (h & (1ul << 20)) f |= VLM_CPU_DOTPROD;
    if (h2 & (1ul << 13)) f |= VLM_CPU_I8MM;
    if (h2 & (1ul << 14)) f |= VLM_CPU_ARM_BF16;
    return f;
}
#elif defined(__aarch64__) && defined(_WIN32) /* untested */
#include <windows.h>
unsigned vlm_cpu_features(void) {
    unsigned f = VLM_CPU_NEON;
    if (IsProcessorFeaturePresent(PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE)) f |= VLM_CPU_DOTPROD;
    return f;
}
#elif defined(__aarch64__) /* elsewhere (macOS, untested): the baseline */
unsigned vlm_cpu_features(void) { return VLM_CPU_NEON; }
#else
unsigned vlm_cpu_features(void) { return 0; }
#endif
