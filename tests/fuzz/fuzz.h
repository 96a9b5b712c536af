/* fuzz.h - what every libFuzzer driver here shares: INVARIANT(cond, fmt,
 * ...) aborts with the driver's file, the condition and a message when cond
 * does not hold, so libFuzzer keeps the input as a crash. */
#ifndef IMB_FUZZ_H
#define IMB_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define INVARIANT(cond, ...)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s: invariant failed: %s: ", __FILE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

#endif
