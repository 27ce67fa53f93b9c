/* SHA-256 of a document and of its canonical bytes, without a Python call per digest.
 * Part of one translation unit: included by _osvc.c, in its order (no header guards).
 *
 * With the x86 SHA extensions (every x86-64 CPU since about 2017) the digest is computed here, at the
 * speed of OpenSSL's own SHA-NI code; hashlib.sha256 (given to configure()) costs about 0.5 µs of
 * object and method-call overhead per call on top, twice per document. Without them, or when
 * use_native_sha256(False) asks for it (the tests compare both), hashlib computes it as before.
 * The rounds follow the structure of Intel's SHA extensions reference (the message schedule with
 * sha256msg1/msg2, two rounds per sha256rnds2); tests hold the result to hashlib on every length
 * from 0 to 300 bytes and on large inputs.
 */

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI_BUILD 1
#else
#define HAVE_SHA_NI_BUILD 0
#endif

static int sha_native; /* computed here (1) or by hashlib (0) */
static int sha_native_available;

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#if HAVE_SHA_NI_BUILD
/* Compress `blocks` 64-byte blocks into state (a..h). */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha_blocks(uint32_t state[8], const unsigned char *data,
                                                                   size_t blocks) {
    const __m128i BSWAP = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i s1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);   /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);     /* EFGH */
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8); /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);      /* CDGH */
    for (; blocks; blocks--, data += 64) {
        __m128i abef = s0, cdgh = s1, w[4];
#pragma GCC unroll 16 /* unrolled, the ring of four message words stays in registers: ~4 % faster */
        for (int g = 0; g < 16; g++) { /* four rounds per group */
            __m128i m;
            if (g < 4) {
                m = w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * g)), BSWAP);
            } else { /* W[g] from W[g-4..g-1], kept in a ring of four */
                __m128i t = _mm_sha256msg1_epu32(w[g & 3], w[(g + 1) & 3]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
                m = w[g & 3] = _mm_sha256msg2_epu32(t, w[(g + 3) & 3]);
            }
            m = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&SHA_K[4 * g]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }
    tmp = _mm_shuffle_epi32(s0, 0x1B);    /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);     /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);  /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);     /* ABEF */
    _mm_storeu_si128((__m128i *)&state[0], s0);
    _mm_storeu_si128((__m128i *)&state[4], s1);
}
#endif

static void init_sha256(void) {
#if HAVE_SHA_NI_BUILD
    unsigned a, b, c, d;
    /* leaf 7: EBX bit 29 = SHA; leaf 1: ECX bit 19 = SSE4.1, bit 9 = SSSE3 */
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)) && __get_cpuid(1, &a, &b, &c, &d) &&
        (c & (1u << 19)) && (c & (1u << 9)))
        sha_native_available = 1;
#endif
    sha_native = sha_native_available;
}

#if HAVE_SHA_NI_BUILD
static void sha256_native(const unsigned char *p, size_t n, unsigned char out[32]) {
    uint32_t st[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t full = n / 64;
    sha_blocks(st, p, full);
    unsigned char tail[128];
    size_t rest = n - full * 64, len = rest + 9 <= 64 ? 64 : 128;
    memset(tail, 0, len);
    memcpy(tail, p + full * 64, rest);
    tail[rest] = 0x80;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) tail[len - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha_blocks(st, tail, len / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(st[i] >> 24);
        out[4 * i + 1] = (unsigned char)(st[i] >> 16);
        out[4 * i + 2] = (unsigned char)(st[i] >> 8);
        out[4 * i + 3] = (unsigned char)st[i];
    }
}
#endif

/* The lowercase hex SHA-256 of p[:n] into hex (64 chars): 0, or -1 with an exception. */
static int sha256_hex(const char *p, Py_ssize_t n, char hex[64]) {
#if HAVE_SHA_NI_BUILD
    if (sha_native) {
        unsigned char d[32];
        sha256_native((const unsigned char *)p, (size_t)n, d);
        for (int i = 0; i < 32; i++) {
            hex[2 * i] = HEX[d[i] >> 4];
            hex[2 * i + 1] = HEX[d[i] & 15];
        }
        return 0;
    }
#endif
    if (!sha256_fn) {
        PyErr_SetString(PyExc_RuntimeError, "_osvc.configure() was not called");
        return -1;
    }
    PyObject *view = PyMemoryView_FromMemory((char *)p, n, PyBUF_READ);
    if (!view) return -1;
    PyObject *h = PyObject_CallOneArg(sha256_fn, view);
    Py_DECREF(view);
    PyObject *hx = h ? PyObject_CallMethod(h, "hexdigest", NULL) : NULL;
    Py_XDECREF(h);
    if (!hx) return -1;
    Py_ssize_t hn;
    const char *hs = PyUnicode_AsUTF8AndSize(hx, &hn);
    int rc = -1;
    if (hs && hn == 64) {
        memcpy(hex, hs, 64);
        rc = 0;
    } else if (hs) {
        PyErr_SetString(PyExc_ValueError, "sha256().hexdigest() is not 64 characters");
    }
    Py_DECREF(hx);
    return rc;
}

PyDoc_STRVAR(sha256_hex_doc, "sha256_hex(data) -> str\n\n"
                             "hashlib.sha256(data).hexdigest(), as staging computes it (for the tests).");

static PyObject *py_sha256_hex(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) return NULL;
    char hex[64];
    int rc = sha256_hex(data.buf, data.len, hex);
    PyBuffer_Release(&data);
    return rc < 0 ? NULL : PyUnicode_FromStringAndSize(hex, 64);
}

PyDoc_STRVAR(use_native_sha256_doc,
             "use_native_sha256(on) -> bool\n\n"
             "Compute digests here (on, when the CPU has the SHA extensions) or through hashlib; returns\n"
             "whether they are now computed here.");

static PyObject *use_native_sha256(PyObject *self, PyObject *arg) {
    (void)self;
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    sha_native = on && sha_native_available;
    return PyBool_FromLong(sha_native);
}
