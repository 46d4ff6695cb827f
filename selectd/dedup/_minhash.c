/* MinHash signatures of a batch of tokenized documents in C, for minhash.py.
 *
 * The same computation as minhash._python_signatures (the reference and the fallback when this
 * module is not built), which is datatrove's MinhashDedupSignature.get_shingles / get_signature:
 * each word n-gram is joined with single spaces, hashed with SHA-1 (the first 8 digest bytes read
 * little-endian; the first 4 for 32-bit precision), and for every hash function k the signature
 * keeps min over shingles of ((h * a[k] + b[k]) mod 2^64) mod (2^61 - 1), masked to 32 bits for
 * 32-bit precision. It exists because hashing each n-gram through hashlib from Python costs more
 * than everything else in the signature once words come from the cached word split.
 *
 * signatures(strings, ids, offsets, n, a, b, precision) -> bytes
 *   strings: list of str (the word split's vocabulary); ids: int64 array of indices into strings,
 *   every document's words concatenated; offsets: int64 array, document d is ids[offsets[d]:
 *   offsets[d+1]]; a, b: uint64 arrays, one entry per hash function. Returns n_docs * len(a)
 *   uint64 minima, row per document; a document with fewer than n words keeps UINT64_MAX.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MERSENNE ((UINT64_C(1) << 61) - 1)

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd-byte items, got %zd", name, itemsize, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---- SHA-1 (FIPS 180-4), only the first two state words are needed --------------------- */

#define ROL(x, s) (((x) << (s)) | ((x) >> (32 - (s))))
/* the message schedule kept in a rolling window of 16 words */
#define W(i) (w[(i) & 15] = ROL(w[((i) + 13) & 15] ^ w[((i) + 8) & 15] ^ w[((i) + 2) & 15] ^ w[(i) & 15], 1))
#define ROUND(a, b, c, d, e, f, k, wi) \
    do { e += ROL(a, 5) + (f) + (k) + (wi); b = ROL(b, 30); } while (0)
#define F1(b, c, d) (d ^ (b & (c ^ d)))
#define F2(b, c, d) (b ^ c ^ d)
#define F3(b, c, d) ((b & c) | (d & (b | c)))

/* the 80 rounds unrolled five at a time, the variables rotating instead of being moved */
#define FIVE(f, k, i, wexpr)                 \
    ROUND(a, b, c, d, e, f(b, c, d), k, wexpr(i));     \
    ROUND(e, a, b, c, d, f(a, b, c), k, wexpr(i + 1)); \
    ROUND(d, e, a, b, c, f(e, a, b), k, wexpr(i + 2)); \
    ROUND(c, d, e, a, b, f(d, e, a), k, wexpr(i + 3)); \
    ROUND(b, c, d, e, a, f(c, d, e), k, wexpr(i + 4))
#define W0(i) w[i]

static void sha1_block(uint32_t state[5], const unsigned char *block) {
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 | (uint32_t)block[4 * i + 2] << 8 |
               (uint32_t)block[4 * i + 3];
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3], e = state[4];
    FIVE(F1, 0x5A827999, 0, W0); FIVE(F1, 0x5A827999, 5, W0); FIVE(F1, 0x5A827999, 10, W0);
    ROUND(a, b, c, d, e, F1(b, c, d), 0x5A827999, w[15]);
    ROUND(e, a, b, c, d, F1(a, b, c), 0x5A827999, W(16));
    ROUND(d, e, a, b, c, F1(e, a, b), 0x5A827999, W(17));
    ROUND(c, d, e, a, b, F1(d, e, a), 0x5A827999, W(18));
    ROUND(b, c, d, e, a, F1(c, d, e), 0x5A827999, W(19));
    FIVE(F2, 0x6ED9EBA1, 20, W); FIVE(F2, 0x6ED9EBA1, 25, W); FIVE(F2, 0x6ED9EBA1, 30, W); FIVE(F2, 0x6ED9EBA1, 35, W);
    FIVE(F3, 0x8F1BBCDC, 40, W); FIVE(F3, 0x8F1BBCDC, 45, W); FIVE(F3, 0x8F1BBCDC, 50, W); FIVE(F3, 0x8F1BBCDC, 55, W);
    FIVE(F2, 0xCA62C1D6, 60, W); FIVE(F2, 0xCA62C1D6, 65, W); FIVE(F2, 0xCA62C1D6, 70, W); FIVE(F2, 0xCA62C1D6, 75, W);
    state[0] += a; state[1] += b; state[2] += c; state[3] += d; state[4] += e;
}

/* SHA-1 of data[0:len]; returns the digest's first 8 bytes as a little-endian integer
 * (struct.unpack("<Q", sha1(data).digest()[:8])) */
static uint64_t sha1_prefix64(const unsigned char *data, size_t len) {
    uint32_t state[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t full = len / 64 * 64;
    for (size_t off = 0; off < full; off += 64) sha1_block(state, data + off);
    unsigned char tail[128];
    size_t rest = len - full;
    memcpy(tail, data + full, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, tail_len - rest - 1);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(state, tail);
    if (tail_len == 128) sha1_block(state, tail + 64);
    /* digest bytes 0..7 are state[0], state[1] big-endian; read them little-endian */
    uint64_t out = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) out |= (uint64_t)((state[i] >> (24 - 8 * j)) & 0xFF) << (8 * (4 * i + j));
    return out;
}

/* x mod (2^61 - 1) for any 64-bit x: 2^61 = 1 (mod p), so x = hi * 2^61 + lo = hi + lo < 2p */
static inline uint64_t mod_mersenne(uint64_t x) {
    uint64_t r = (x & MERSENNE) + (x >> 61);
    return r >= MERSENNE ? r - MERSENNE : r;
}

/* mins[k] = min(mins[k], ((h * a[k] + b[k]) mod 2^64 mod p) & mask) for every hash function k.
 * The loop vectorizes; on x86-64 an AVX2 clone is picked at load time where the CPU has it
 * (about 2.5x faster than the SSE2 baseline). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void min_update(uint64_t *restrict mins, const uint64_t *restrict a, const uint64_t *restrict b, uint64_t h,
                       Py_ssize_t n, uint64_t mask) {
    for (Py_ssize_t k = 0; k < n; k++) {
        uint64_t v = mod_mersenne(h * a[k] + b[k]) & mask;
        mins[k] = v < mins[k] ? v : mins[k];
    }
}

static PyObject *signatures(PyObject *self, PyObject *args) {
    PyObject *strings, *objs[4];
    Py_ssize_t n;
    int precision;
    if (!PyArg_ParseTuple(args, "O!OOnOOi", &PyList_Type, &strings, &objs[0], &objs[1], &n, &objs[2], &objs[3],
                          &precision))
        return NULL;
    if (n < 1) return PyErr_Format(PyExc_ValueError, "n must be >= 1");
    static const char *names[4] = {"ids", "offsets", "a", "b"};
    Py_buffer views[4];
    int got = 0;
    for (; got < 4; got++)
        if (get_buffer(objs[got], &views[got], 8, names[got]) < 0) goto fail_views;
    const int64_t *ids = views[0].buf, *offsets = views[1].buf;
    const uint64_t *a = views[2].buf, *b = views[3].buf;
    Py_ssize_t n_ids = views[0].len / 8, n_docs = views[1].len / 8 - 1, n_hashes = views[2].len / 8;
    if (n_docs < 0 || views[3].len != views[2].len) {
        PyErr_SetString(PyExc_ValueError, "offsets needs n_docs + 1 entries and a, b the same length");
        goto fail_views;
    }
    Py_ssize_t n_strings = PyList_GET_SIZE(strings);
    PyObject *result = PyBytes_FromStringAndSize(NULL, n_docs * n_hashes * 8);
    if (!result) goto fail_views;
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n_docs * n_hashes; i++) out[i] = UINT64_MAX;
    const char **word = NULL;
    Py_ssize_t *word_len = NULL;
    unsigned char *joined = NULL;
    size_t joined_cap = 0;
    uint64_t mask = precision == 32 ? UINT64_C(0xFFFFFFFF) : UINT64_MAX;
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        int64_t start = offsets[d], end = offsets[d + 1];
        if (start < 0 || end < start || end > n_ids) {
            PyErr_SetString(PyExc_ValueError, "offsets out of range");
            goto fail;
        }
        if (end - start < n) continue;
        /* this document's words as UTF-8 (cached inside each str object by CPython) */
        PyMem_Free(word);
        PyMem_Free(word_len);
        word = PyMem_Malloc(sizeof(char *) * (end - start));
        word_len = PyMem_Malloc(sizeof(Py_ssize_t) * (end - start));
        if (!word || !word_len) { PyErr_NoMemory(); goto fail; }
        for (int64_t i = start; i < end; i++) {
            int64_t id = ids[i];
            if (id < 0 || id >= n_strings) {
                PyErr_SetString(PyExc_IndexError, "word id out of range");
                goto fail;
            }
            PyObject *s = PyList_GET_ITEM(strings, id);
            if (!PyUnicode_Check(s)) {
                PyErr_SetString(PyExc_TypeError, "strings must hold str");
                goto fail;
            }
            word[i - start] = PyUnicode_AsUTF8AndSize(s, &word_len[i - start]);
            if (!word[i - start]) goto fail;
        }
        uint64_t *mins = out + d * n_hashes;
        for (int64_t g = 0; g + n <= end - start; g++) {
            size_t len = n - 1; /* the spaces */
            for (Py_ssize_t j = 0; j < n; j++) len += word_len[g + j];
            if (len > joined_cap) {
                PyMem_Free(joined);
                joined_cap = len * 2 + 64;
                joined = PyMem_Malloc(joined_cap);
                if (!joined) { PyErr_NoMemory(); goto fail; }
            }
            size_t pos = 0;
            for (Py_ssize_t j = 0; j < n; j++) {
                if (j) joined[pos++] = ' ';
                memcpy(joined + pos, word[g + j], word_len[g + j]);
                pos += word_len[g + j];
            }
            uint64_t h = sha1_prefix64(joined, len);
            if (precision == 32) h &= UINT64_C(0xFFFFFFFF);
            min_update(mins, a, b, h, n_hashes, mask);
        }
    }
    PyMem_Free(word);
    PyMem_Free(word_len);
    PyMem_Free(joined);
    for (int i = 0; i < 4; i++) PyBuffer_Release(&views[i]);
    return result;
fail:
    PyMem_Free(word);
    PyMem_Free(word_len);
    PyMem_Free(joined);
    Py_DECREF(result);
fail_views:
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    return NULL;
}

static PyMethodDef methods[] = {
    {"signatures", signatures, METH_VARARGS, "MinHash signatures of tokenized documents (see the file header)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_minhash", "MinHash signatures in C", -1, methods};

PyMODINIT_FUNC PyInit__minhash(void) { return PyModule_Create(&module); }
