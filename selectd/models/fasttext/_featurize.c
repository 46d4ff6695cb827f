/* fastText's Dictionary::getLine in C: texts -> input-row ids, for selectd's ONNX fastText scorer.
 *
 * The same algorithm as features.py (see its docstring and ../shared/specs/fasttext-inference.md):
 * split UTF-8 bytes on space \n \r \t \v \f \0, end the line with "</s>" (a literal "</s>" token
 * ends it early), skip label tokens, emit word ids and char n-gram buckets, then word n-grams with
 * 64-bit wraparound, every bucket through the pruned index when the model has one. It exists
 * because the per-token work is the whole cost of fastText inference once W·Oᵀ is folded, and a
 * Python dict lookup per token is slower than native fastText's whole prediction.
 *
 * Featurizer(words, labels, bucket, minn, maxn, word_ngrams, bucket_rows, prune_all, cache_limit=2^18)
 *   words, labels: lists of bytes (dictionary order); bucket_rows: None, or bytes of int32[bucket]
 *   (row after nwords, -1 = pruned away); prune_all: the model keeps no bucket at all; cache_limit:
 *   tokens whose features are kept (the cache is cleared when it holds that many).
 * Featurizer.featurize(texts) -> (ids: bytes of int64, counts: bytes of int64 per text)
 *
 * sum_rows(table, width, ids, counts, in_float64) -> bytes of float32[len(counts) * width]
 *   each text's sum of its ``counts[i]`` table rows, in id order: in float32 one row after the other
 *   as fastText's Vector::addRow (in_float64 false), or in float64 and rounded once (folded tables,
 *   whose rows are logit contributions). It exists because ONNX Runtime's Gather costs ~70 ns per
 *   16-float row, a loop here a few.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u
#define WORD_NGRAM_MULTIPLIER 116049371ull

static const char EOS[] = "</s>";
static const Py_ssize_t EOS_LEN = 4;
static const char LABEL_PREFIX[] = "__label__";
static const Py_ssize_t LABEL_PREFIX_LEN = 9;

typedef struct {
    void *data;
    Py_ssize_t size, capacity, item;
} Buffer;

static int buffer_reserve(Buffer *b, Py_ssize_t extra) {
    if (b->size + extra <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : 1024;
    while (capacity < b->size + extra) capacity *= 2;
    void *grown = PyMem_Realloc(b->data, (size_t)capacity * b->item);
    if (!grown) { PyErr_NoMemory(); return -1; }
    b->data = grown;
    b->capacity = capacity;
    return 0;
}

static inline int push_i64(Buffer *b, int64_t value) {
    if (b->size == b->capacity && buffer_reserve(b, 1) < 0) return -1;
    ((int64_t *)b->data)[b->size++] = value;
    return 0;
}

static inline int push_i32(Buffer *b, int32_t value) {
    if (b->size == b->capacity && buffer_reserve(b, 1) < 0) return -1;
    ((int32_t *)b->data)[b->size++] = value;
    return 0;
}

static inline uint32_t fnv1a(const unsigned char *s, Py_ssize_t n) {
    uint32_t h = FNV_OFFSET;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (uint32_t)(int8_t)s[i]; /* fastText sign-extends each byte */
        h *= FNV_PRIME;
    }
    return h;
}

static inline int is_separator(unsigned char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == '\0';
}

#define CACHE_MAX_TOKEN 64           /* longer tokens are rare and costly to keep: resolved each time */
#define CACHE_MAX_IDS (1 << 22)      /* 32 MB of ids at most */

typedef struct {
    uint32_t hash;
    int32_t key_length;
    Py_ssize_t key_offset, ids_offset;
    int32_t ids_count;
    char is_label;
} CachedToken;

typedef struct {
    PyObject_HEAD
    char *arena;            /* all dictionary entries' bytes */
    Py_ssize_t *offset;     /* entry -> start in arena */
    Py_ssize_t *length;     /* entry -> byte length */
    char *is_label;         /* entry -> 1 for labels */
    int32_t *table;         /* open addressing: entry index or -1 */
    uint32_t *table_hash;   /* FNV hash of the entry in each slot */
    uint64_t mask;
    int32_t nwords, nentries;
    uint32_t bucket;
    uint64_t bucket_magic;  /* UINT64_MAX / bucket + 1, for bucket_of_u32 */
    int minn, maxn, word_ngrams, prune_all;
    int32_t *bucket_rows;   /* NULL: not pruned */
    uint64_t *bucket_kept;  /* pruned: one bit per bucket, set if it has a row. A pruned model keeps few
                             * buckets (lid.176: 2 %), so most n-grams are rejected by this 256 KB
                             * bitmap, which stays in cache, instead of by the 8 MB row index, a cache
                             * miss per n-gram */
    int32_t eos_id;
    uint32_t eos_hash;
    unsigned char *scratch; /* "<" + token + ">" */
    Py_ssize_t scratch_size;
    Buffer ids, hashes;
    Buffer line;            /* the tokens of the line at hand (LineToken) */
    /* token cache: a token's features, resolved once. Natural text repeats its words (a 3.7 KB page:
     * ~600 tokens, most of them seen before), and a token's vocabulary lookup and char n-grams are
     * most of featurization. Open addressing over twice as many slots as entries, so probes stay
     * short; cleared when full, so memory stays bounded on an endless stream. */
    int32_t *cache_slot;       /* entry index or -1 */
    uint64_t cache_mask;       /* slots - 1 */
    CachedToken *cached;       /* cache_limit entries */
    int32_t cache_entries, cache_limit;
    Buffer cache_keys, cache_ids; /* token bytes (char), feature ids (int64) of the entries */
} Featurizer;

static int32_t lookup(const Featurizer *f, const unsigned char *token, Py_ssize_t n, uint32_t h) {
    uint64_t slot = h & f->mask;
    for (;;) {
        int32_t entry = f->table[slot];
        if (entry < 0) return -1;
        if (f->table_hash[slot] == h && f->length[entry] == n && memcmp(f->arena + f->offset[entry], token, (size_t)n) == 0)
            return entry;
        slot = (slot + 1) & f->mask;
    }
}

/* a 32-bit hash modulo the bucket count without a division instruction (Lemire's fastmod, exact for
 * every 32-bit value and divisor): a char n-gram costs a few cycles, and a division was most of them */
static inline uint32_t bucket_of_u32(const Featurizer *f, uint32_t hash) {
    uint64_t low_bits = f->bucket_magic * hash;
    return (uint32_t)(((__uint128_t)low_bits * f->bucket) >> 64);
}

/* fastText's pushHash(hash % bucket) for a bucket: the bucket becomes row nwords + bucket, through
 * the pruned index if any */
static inline int push_bucket_index(Featurizer *f, uint32_t bucket) {
    int64_t row = bucket;
    if (f->bucket_rows) {
        if (!(f->bucket_kept[bucket >> 6] >> (bucket & 63) & 1)) return 0; /* set exactly where a row exists */
        row = f->bucket_rows[bucket];
    }
    return push_i64(&f->ids, (int64_t)f->nwords + row);
}

/* word n-grams: 64-bit hashes */
static inline int push_bucket(Featurizer *f, uint64_t hash) {
    if (f->prune_all || f->bucket == 0) return 0;
    return push_bucket_index(f, (uint32_t)(hash % f->bucket));
}

/* char n-grams: 32-bit hashes */
static inline int push_bucket_u32(Featurizer *f, uint32_t hash) {
    if (f->prune_all || f->bucket == 0) return 0;
    return push_bucket_index(f, bucket_of_u32(f, hash));
}

/* fastText's computeSubwords over "<" + token + ">" */
static int push_subwords(Featurizer *f, const unsigned char *token, Py_ssize_t n) {
    Py_ssize_t size = n + 2;
    if (size > f->scratch_size) {
        unsigned char *grown = PyMem_Realloc(f->scratch, (size_t)size * 2);
        if (!grown) { PyErr_NoMemory(); return -1; }
        f->scratch = grown;
        f->scratch_size = size * 2;
    }
    unsigned char *w = f->scratch;
    w[0] = '<';
    memcpy(w + 1, token, (size_t)n);
    w[n + 1] = '>';
    for (Py_ssize_t i = 0; i < size; i++) {
        if ((w[i] & 0xC0) == 0x80) continue;
        uint32_t h = FNV_OFFSET;
        Py_ssize_t j = i;
        for (int chars = 1; j < size && chars <= f->maxn; chars++) {
            h = (h ^ (uint32_t)(int8_t)w[j++]) * FNV_PRIME;
            while (j < size && (w[j] & 0xC0) == 0x80) h = (h ^ (uint32_t)(int8_t)w[j++]) * FNV_PRIME;
            if (chars >= f->minn && !(chars == 1 && (i == 0 || j == size))) {
                if (push_bucket_u32(f, h) < 0) return -1;
            }
        }
    }
    return 0;
}

/* one token of getLine, resolved from scratch; returns 1 for a label (skipped), 0, or -1 on memory error */
static int resolve_token(Featurizer *f, const unsigned char *token, Py_ssize_t n, uint32_t h) {
    int32_t entry = lookup(f, token, n, h);
    int is_label = entry >= 0 ? f->is_label[entry]
                              : (n >= LABEL_PREFIX_LEN && memcmp(token, LABEL_PREFIX, LABEL_PREFIX_LEN) == 0);
    if (is_label) return 1;
    if (entry >= 0 && push_i64(&f->ids, entry) < 0) return -1; /* words come first: entry == word id */
    if (f->maxn > 0 && push_subwords(f, token, n) < 0) return -1;
    return 0;
}

static void cache_clear(Featurizer *f) {
    memset(f->cache_slot, 0xFF, sizeof(int32_t) * (f->cache_mask + 1));
    f->cache_entries = 0;
    f->cache_keys.size = f->cache_ids.size = 0;
}

/* one token of getLine (hashed: h = fnv1a) through the cache; returns -1 on memory error */
static int add_token(Featurizer *f, const unsigned char *token, Py_ssize_t n, uint32_t h) {
    uint64_t slot = h & f->cache_mask;
    int is_label;
    for (;;) {
        int32_t index = f->cache_slot[slot];
        if (index < 0) break;
        const CachedToken *c = &f->cached[index];
        if (c->hash == h && c->key_length == n && memcmp((char *)f->cache_keys.data + c->key_offset, token, (size_t)n) == 0) {
            if (c->is_label) return 0;
            if (push_i32(&f->hashes, (int32_t)h) < 0 || buffer_reserve(&f->ids, c->ids_count) < 0) return -1;
            memcpy((int64_t *)f->ids.data + f->ids.size, (int64_t *)f->cache_ids.data + c->ids_offset,
                   sizeof(int64_t) * (size_t)c->ids_count);
            f->ids.size += c->ids_count;
            return 0;
        }
        slot = (slot + 1) & f->cache_mask;
    }
    Py_ssize_t first = f->ids.size;
    if ((is_label = resolve_token(f, token, n, h)) < 0) return -1;
    if (!is_label && push_i32(&f->hashes, (int32_t)h) < 0) return -1;
    Py_ssize_t count = f->ids.size - first;
    if (n > CACHE_MAX_TOKEN) return 0;
    if (f->cache_entries == f->cache_limit || f->cache_ids.size + count > CACHE_MAX_IDS) {
        cache_clear(f);
        slot = h & f->cache_mask;
    }
    if (buffer_reserve(&f->cache_keys, n) < 0 || buffer_reserve(&f->cache_ids, count) < 0) return -1;
    CachedToken *c = &f->cached[f->cache_entries];
    *c = (CachedToken){.hash = h, .key_length = (int32_t)n, .key_offset = f->cache_keys.size,
                       .ids_offset = f->cache_ids.size, .ids_count = (int32_t)count, .is_label = (char)is_label};
    memcpy((char *)f->cache_keys.data + f->cache_keys.size, token, (size_t)n);
    f->cache_keys.size += n;
    memcpy((int64_t *)f->cache_ids.data + f->cache_ids.size, (int64_t *)f->ids.data + first, sizeof(int64_t) * (size_t)count);
    f->cache_ids.size += count;
    f->cache_slot[slot] = f->cache_entries++;
    return 0;
}

typedef struct {
    const unsigned char *token;
    Py_ssize_t n;
    uint32_t hash;
} LineToken;

/* getLine over one text. Its tokens are read in passes so that their cache misses overlap instead
 * of coming one after another (a known token's cost is mostly a miss on its cache slot, then on its
 * entry): split the line and prefetch every token's slot, prefetch the entries the slots name,
 * then resolve the tokens in order. The prefetches are hints only: add_token probes as before. */
static int add_line(Featurizer *f, const unsigned char *data, Py_ssize_t size) {
    f->hashes.size = 0;
    f->line.size = 0;
    const unsigned char *p = data, *end = data + size;
    for (;;) {
        while (p < end && is_separator(*p)) p++;
        if (p == end) break;
        const unsigned char *token = p;
        while (p < end && !is_separator(*p)) p++;
        if (p - token == EOS_LEN && memcmp(token, EOS, EOS_LEN) == 0) break; /* "</s>" ends the line */
        if (f->line.size == f->line.capacity && buffer_reserve(&f->line, 1) < 0) return -1;
        uint32_t h = fnv1a(token, p - token);
        ((LineToken *)f->line.data)[f->line.size++] = (LineToken){token, p - token, h};
        __builtin_prefetch(&f->cache_slot[h & f->cache_mask]);
    }
    const LineToken *tokens = f->line.data;
    for (Py_ssize_t i = 0; i < f->line.size; i++) {
        int32_t index = f->cache_slot[tokens[i].hash & f->cache_mask];
        if (index >= 0) __builtin_prefetch(&f->cached[index]);
    }
    for (Py_ssize_t i = 0; i < f->line.size; i++)
        if (add_token(f, tokens[i].token, tokens[i].n, tokens[i].hash) < 0) return -1;
    /* the end of line: </s>, never with subwords */
    if (push_i32(&f->hashes, (int32_t)f->eos_hash) < 0) return -1;
    if (f->eos_id >= 0 && push_i64(&f->ids, f->eos_id) < 0) return -1;
    /* word n-grams over the words' hashes, sign-extended to 64 bits, wrapping */
    const int32_t *hashes = (const int32_t *)f->hashes.data;
    Py_ssize_t count = f->hashes.size;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t h = (uint64_t)(int64_t)hashes[i];
        for (Py_ssize_t j = i + 1; j < count && j < i + f->word_ngrams; j++) {
            h = h * WORD_NGRAM_MULTIPLIER + (uint64_t)(int64_t)hashes[j];
            if (push_bucket(f, h) < 0) return -1;
        }
    }
    return 0;
}

static PyObject *featurize(Featurizer *f, PyObject *texts_arg) {
    PyObject *texts = PySequence_Fast(texts_arg, "featurize() needs a sequence of str");
    if (!texts) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(texts);
    PyObject *counts = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (!counts) { Py_DECREF(texts); return NULL; }
    int64_t *count = (int64_t *)PyBytes_AS_STRING(counts);
    f->ids.size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = PySequence_Fast_GET_ITEM(texts, i);
        PyObject *encoded = NULL;
        const char *data;
        Py_ssize_t size;
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "text %zd is %.100s, not str", i, Py_TYPE(text)->tp_name);
            goto fail;
        }
        data = PyUnicode_AsUTF8AndSize(text, &size);
        if (!data) { /* lone surrogates: encode them as Python's "surrogatepass" does */
            PyErr_Clear();
            encoded = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
            if (!encoded) goto fail;
            data = PyBytes_AS_STRING(encoded);
            size = PyBytes_GET_SIZE(encoded);
        }
        Py_ssize_t before = f->ids.size;
        int status = add_line(f, (const unsigned char *)data, size);
        Py_XDECREF(encoded);
        if (status < 0) goto fail;
        count[i] = f->ids.size - before;
    }
    Py_DECREF(texts);
    PyObject *ids = PyBytes_FromStringAndSize((const char *)f->ids.data, f->ids.size * (Py_ssize_t)sizeof(int64_t));
    if (!ids) { Py_DECREF(counts); return NULL; }
    return Py_BuildValue("(NN)", ids, counts);
fail:
    Py_DECREF(texts);
    Py_DECREF(counts);
    return NULL;
}

static void featurizer_dealloc(Featurizer *f) {
    PyMem_Free(f->arena);
    PyMem_Free(f->offset);
    PyMem_Free(f->length);
    PyMem_Free(f->is_label);
    PyMem_Free(f->table);
    PyMem_Free(f->table_hash);
    PyMem_Free(f->bucket_rows);
    PyMem_Free(f->bucket_kept);
    PyMem_Free(f->scratch);
    PyMem_Free(f->ids.data);
    PyMem_Free(f->hashes.data);
    PyMem_Free(f->line.data);
    PyMem_Free(f->cache_slot);
    PyMem_Free(f->cached);
    PyMem_Free(f->cache_keys.data);
    PyMem_Free(f->cache_ids.data);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static int add_entries(Featurizer *f, PyObject *list, char label, Py_ssize_t *arena_used) {
    Py_ssize_t n = PyList_GET_SIZE(list);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "dictionary entries must be bytes");
            return -1;
        }
        int32_t entry = f->nentries++;
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        memcpy(f->arena + *arena_used, PyBytes_AS_STRING(item), (size_t)len);
        f->offset[entry] = *arena_used;
        f->length[entry] = len;
        f->is_label[entry] = label;
        *arena_used += len;
        uint32_t h = fnv1a((const unsigned char *)PyBytes_AS_STRING(item), len);
        uint64_t slot = h & f->mask;
        while (f->table[slot] >= 0) {
            int32_t other = f->table[slot];
            if (f->length[other] == len && memcmp(f->arena + f->offset[other], f->arena + f->offset[entry], (size_t)len) == 0) {
                PyErr_Format(PyExc_ValueError, "duplicate dictionary entry %R", item);
                return -1;
            }
            slot = (slot + 1) & f->mask;
        }
        f->table[slot] = entry;
        f->table_hash[slot] = h;
    }
    return 0;
}

static int featurizer_init(Featurizer *f, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"words", "labels", "bucket", "minn", "maxn", "word_ngrams", "bucket_rows", "prune_all",
                               "cache_limit", NULL};
    PyObject *words, *labels, *bucket_rows;
    long long bucket;
    int minn, maxn, word_ngrams, prune_all, cache_limit = 1 << 18;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!LiiiOp|i", keywords, &PyList_Type, &words, &PyList_Type, &labels,
                                     &bucket, &minn, &maxn, &word_ngrams, &bucket_rows, &prune_all, &cache_limit))
        return -1;
    if (cache_limit < 1 || cache_limit > (1 << 28)) {
        PyErr_SetString(PyExc_ValueError, "cache_limit must be between 1 and 2^28 tokens");
        return -1;
    }
    if (bucket <= 0 && !prune_all && (maxn > 0 || word_ngrams > 1)) {
        PyErr_SetString(PyExc_ValueError, "bucket must be positive for a model with hashed features");
        return -1;
    }
    if (bucket > UINT32_MAX || word_ngrams < 1) {
        PyErr_SetString(PyExc_ValueError, "bucket or word_ngrams out of range");
        return -1;
    }
    Py_ssize_t nwords = PyList_GET_SIZE(words), total = nwords + PyList_GET_SIZE(labels), arena_size = 0;
    for (Py_ssize_t i = 0; i < total; i++) {
        PyObject *item = i < nwords ? PyList_GET_ITEM(words, i) : PyList_GET_ITEM(labels, i - nwords);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "dictionary entries must be bytes");
            return -1;
        }
        arena_size += PyBytes_GET_SIZE(item);
    }
    uint64_t slots = 1024;
    while (slots < (uint64_t)total * 2) slots *= 2;
    f->arena = PyMem_Malloc((size_t)arena_size + 1);
    f->offset = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(total + 1));
    f->length = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(total + 1));
    f->is_label = PyMem_Malloc((size_t)total + 1);
    f->table = PyMem_Malloc(sizeof(int32_t) * slots);
    f->table_hash = PyMem_Malloc(sizeof(uint32_t) * slots);
    if (!f->arena || !f->offset || !f->length || !f->is_label || !f->table || !f->table_hash) {
        PyErr_NoMemory();
        return -1;
    }
    memset(f->table, 0xFF, sizeof(int32_t) * slots);
    f->mask = slots - 1;
    f->nwords = (int32_t)nwords;
    f->bucket = (uint32_t)bucket;
    f->bucket_magic = bucket > 0 ? UINT64_MAX / (uint64_t)bucket + 1 : 0;
    f->minn = minn;
    f->maxn = maxn;
    f->word_ngrams = word_ngrams;
    f->prune_all = prune_all;
    f->ids.item = sizeof(int64_t);
    f->hashes.item = sizeof(int32_t);
    f->line.item = sizeof(LineToken);
    f->cache_keys.item = sizeof(char);
    f->cache_ids.item = sizeof(int64_t);
    f->cache_limit = cache_limit;
    f->cache_mask = 1;
    while (f->cache_mask + 1 < 2 * (uint64_t)cache_limit) f->cache_mask = f->cache_mask * 2 + 1;
    f->cache_slot = PyMem_Malloc(sizeof(int32_t) * (f->cache_mask + 1));
    f->cached = PyMem_Malloc(sizeof(CachedToken) * (size_t)cache_limit);
    if (!f->cache_slot || !f->cached) { PyErr_NoMemory(); return -1; }
    cache_clear(f);
    Py_ssize_t used = 0;
    if (add_entries(f, words, 0, &used) < 0 || add_entries(f, labels, 1, &used) < 0) return -1;
    if (bucket_rows != Py_None) {
        Py_buffer view;
        if (PyObject_GetBuffer(bucket_rows, &view, PyBUF_SIMPLE) < 0) return -1;
        if (view.len != (Py_ssize_t)sizeof(int32_t) * bucket) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "bucket_rows must hold one int32 per bucket");
            return -1;
        }
        f->bucket_rows = PyMem_Malloc((size_t)view.len);
        if (!f->bucket_rows) { PyBuffer_Release(&view); PyErr_NoMemory(); return -1; }
        memcpy(f->bucket_rows, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
        f->bucket_kept = PyMem_Calloc((size_t)(bucket + 63) / 64, sizeof(uint64_t));
        if (!f->bucket_kept) { PyErr_NoMemory(); return -1; }
        for (long long b = 0; b < bucket; b++)
            if (f->bucket_rows[b] >= 0) f->bucket_kept[b >> 6] |= 1ull << (b & 63);
    }
    f->eos_hash = fnv1a((const unsigned char *)EOS, EOS_LEN);
    f->eos_id = lookup(f, (const unsigned char *)EOS, EOS_LEN, f->eos_hash);
    if (f->eos_id >= 0 && f->is_label[f->eos_id]) f->eos_id = -1;
    return 0;
}

static PyMethodDef featurizer_methods[] = {
    {"featurize", (PyCFunction)featurize, METH_O, "featurize(texts) -> (ids int64 bytes, counts int64 bytes)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FeaturizerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "selectd.models.fasttext._featurize.Featurizer",
    .tp_basicsize = sizeof(Featurizer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "fastText's getLine: texts -> input-row ids",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)featurizer_init,
    .tp_dealloc = (destructor)featurizer_dealloc,
    .tp_methods = featurizer_methods,
};

static PyObject *sum_rows(PyObject *module, PyObject *args) {
    Py_buffer table, ids, counts;
    Py_ssize_t width;
    int in_float64;
    if (!PyArg_ParseTuple(args, "y*ny*y*p:sum_rows", &table, &width, &ids, &counts, &in_float64)) return NULL;
    PyObject *result = NULL;
    double *wide = NULL;
    Py_ssize_t rows = width > 0 ? table.len / (width * (Py_ssize_t)sizeof(float)) : 0;
    Py_ssize_t n_ids = ids.len / (Py_ssize_t)sizeof(int64_t), n_docs = counts.len / (Py_ssize_t)sizeof(int64_t);
    const float *matrix = (const float *)table.buf;
    const int64_t *id = (const int64_t *)ids.buf, *count = (const int64_t *)counts.buf;
    if (width <= 0 || rows * width * (Py_ssize_t)sizeof(float) != table.len) {
        PyErr_Format(PyExc_ValueError, "table of %zd bytes is not rows of %zd float32", table.len, width);
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, n_docs * width * (Py_ssize_t)sizeof(float));
    if (!result) goto done;
    float *out = (float *)PyBytes_AS_STRING(result);
    memset(out, 0, n_docs * width * sizeof(float));
    if (in_float64 && !(wide = calloc(width, sizeof(double)))) { PyErr_NoMemory(); Py_CLEAR(result); goto done; }
    Py_ssize_t next = 0;
    for (Py_ssize_t doc = 0; doc < n_docs; doc++, out += width) {
        if (count[doc] < 0 || count[doc] > n_ids - next) {
            PyErr_Format(PyExc_ValueError, "counts exceed the %zd ids", n_ids);
            Py_CLEAR(result);
            goto done;
        }
        Py_ssize_t end = next + count[doc];
        if (in_float64) memset(wide, 0, width * sizeof(double));
        for (; next < end; next++) {
            if (id[next] < 0 || id[next] >= rows) {
                PyErr_Format(PyExc_ValueError, "id %lld outside the table's %zd rows", (long long)id[next], rows);
                Py_CLEAR(result);
                goto done;
            }
            const float *row = matrix + id[next] * width;
            if (in_float64) for (Py_ssize_t j = 0; j < width; j++) wide[j] += row[j];
            else for (Py_ssize_t j = 0; j < width; j++) out[j] += row[j];
        }
        if (in_float64) for (Py_ssize_t j = 0; j < width; j++) out[j] = (float)wide[j];
    }
done:
    free(wide);
    PyBuffer_Release(&table);
    PyBuffer_Release(&ids);
    PyBuffer_Release(&counts);
    return result;
}

static PyMethodDef module_methods[] = {
    {"sum_rows", sum_rows, METH_VARARGS,
     "sum_rows(table, width, ids, counts, in_float64) -> float32 bytes: each text's sum of its table rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_featurize", "fastText featurization in C", -1, module_methods};

PyMODINIT_FUNC PyInit__featurize(void) {
    if (PyType_Ready(&FeaturizerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&FeaturizerType);
    if (PyModule_AddObject(m, "Featurizer", (PyObject *)&FeaturizerType) < 0) {
        Py_DECREF(&FeaturizerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
