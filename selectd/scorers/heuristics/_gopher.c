/* Gopher's hot loops in C, for gopher.py: datatrove's greedy duplicate n-gram scan
 * (``find_all_duplicate``), n-gram counts, and the bullet / ellipsis line counts of Gopher quality.
 *
 * The same algorithm as gopher._greedy_repeated_chars_python (the reference and the fallback when
 * this module is not built): per document, scan the candidate positions (n-grams that occur more
 * than once) left to right; an n-gram seen before adds its characters and the scan jumps past it,
 * otherwise it joins the seen set. It exists because the scan is sequential (a jump decides which
 * later positions are seen), so numpy cannot do it, and a Python set per document was the largest
 * cost of the repetition scorer once words are cached.
 *
 * greedy_repeated_chars(n, positions, keys, chars, docs, totals)
 *   positions, chars, docs: int64 arrays; keys: uint64 array (all the same length, docs
 *   non-decreasing); totals: float64 array, one slot per document, written in place.
 *
 * key_counts(keys, counts): counts[i] = how many times keys[i] occurs in keys (uint64 in, int64
 *   out, same length). The n-gram counts of every position of a batch: a hash table is O(n)
 *   where numpy's unique sorts, and that sort was the largest cost left in the scorer.
 *
 * line_shapes(texts, bullets, ellipses, lines): gopher._line_shapes_python per text (the
 *   reference and the fallback): lines starting with a bullet, lines ending with an ellipsis,
 *   lines, as str.splitlines() cuts them, into three int64 arrays of len(texts). Per line in
 *   Python it was a third of Gopher quality's cost once words come from C.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd-byte items, got %zd", name, itemsize, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* one document's seen set: open addressing over the slots [0, mask], cleared per document */
typedef struct {
    uint64_t *keys;
    unsigned char *used;
    Py_ssize_t capacity;
} SeenSet;

static int seen_reset(SeenSet *set, Py_ssize_t needed, uint64_t *mask) {
    Py_ssize_t slots = 16;
    while (slots < 2 * needed) slots *= 2;
    if (slots > set->capacity) {
        uint64_t *keys = PyMem_Realloc(set->keys, (size_t)slots * sizeof(uint64_t));
        if (!keys) { PyErr_NoMemory(); return -1; }
        set->keys = keys;
        unsigned char *used = PyMem_Realloc(set->used, (size_t)slots);
        if (!used) { PyErr_NoMemory(); return -1; }
        set->used = used;
        set->capacity = slots;
    }
    memset(set->used, 0, (size_t)slots);
    *mask = (uint64_t)slots - 1;
    return 0;
}

/* insert key; returns 1 when it was already there */
static inline int seen_add(SeenSet *set, uint64_t mask, uint64_t key) {
    uint64_t slot = (key ^ (key >> 29)) & mask;
    while (set->used[slot]) {
        if (set->keys[slot] == key) return 1;
        slot = (slot + 1) & mask;
    }
    set->used[slot] = 1;
    set->keys[slot] = key;
    return 0;
}

static PyObject *greedy_repeated_chars(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    PyObject *objs[5];
    if (!PyArg_ParseTuple(args, "nOOOOO", &n, &objs[0], &objs[1], &objs[2], &objs[3], &objs[4])) return NULL;
    static const char *names[5] = {"positions", "keys", "chars", "docs", "totals"};
    Py_buffer views[5];
    int got = 0;
    PyObject *result = NULL;
    SeenSet set = {NULL, NULL, 0};
    for (; got < 5; got++) {
        if (get_buffer(objs[got], &views[got], 8, got == 4, names[got]) < 0) goto done;
    }
    Py_ssize_t count = views[0].len / 8, n_docs = views[4].len / 8;
    for (int i = 1; i < 4; i++) {
        if (views[i].len / 8 != count) {
            PyErr_Format(PyExc_ValueError, "%s: %zd items, positions has %zd", names[i], views[i].len / 8, count);
            goto done;
        }
    }
    const int64_t *positions = views[0].buf, *chars = views[2].buf, *docs = views[3].buf;
    const uint64_t *keys = views[1].buf;
    double *totals = views[4].buf;
    Py_ssize_t start = 0;
    while (start < count) {
        int64_t doc = docs[start];
        Py_ssize_t end = start;
        while (end < count && docs[end] == doc) end++;
        if (doc < 0 || doc >= n_docs) {
            PyErr_Format(PyExc_IndexError, "document %lld outside totals (%zd documents)", (long long)doc, n_docs);
            goto done;
        }
        uint64_t mask;
        if (seen_reset(&set, end - start, &mask) < 0) goto done;
        int64_t next_position = 0, total = 0;
        for (Py_ssize_t i = start; i < end; i++) {
            if (positions[i] < next_position) continue; /* inside a repeat the scan jumped over */
            if (seen_add(&set, mask, keys[i])) {
                total += chars[i];
                next_position = positions[i] + n;
            } else {
                next_position = positions[i] + 1;
            }
        }
        totals[doc] = (double)total;
        start = end;
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(set.keys);
    PyMem_Free(set.used);
    return result;
}

/* key -> count, open addressing; a slot's count 0 means empty */
static PyObject *key_counts(PyObject *self, PyObject *args) {
    PyObject *keys_obj, *counts_obj;
    if (!PyArg_ParseTuple(args, "OO", &keys_obj, &counts_obj)) return NULL;
    Py_buffer keys_view, counts_view;
    if (get_buffer(keys_obj, &keys_view, 8, 0, "keys") < 0) return NULL;
    if (get_buffer(counts_obj, &counts_view, 8, 1, "counts") < 0) { PyBuffer_Release(&keys_view); return NULL; }
    PyObject *result = NULL;
    Py_ssize_t count = keys_view.len / 8;
    uint64_t *slot_keys = NULL;
    int64_t *slot_counts = NULL;
    int64_t *slot_of = NULL;
    if (counts_view.len / 8 != count) {
        PyErr_Format(PyExc_ValueError, "counts: %zd items, keys has %zd", counts_view.len / 8, count);
        goto done;
    }
    const uint64_t *keys = keys_view.buf;
    int64_t *counts = counts_view.buf;
    Py_ssize_t slots = 16;
    while (slots < 2 * count) slots *= 2;
    uint64_t mask = (uint64_t)slots - 1;
    slot_keys = PyMem_Malloc((size_t)slots * sizeof(uint64_t));
    slot_counts = PyMem_Calloc((size_t)slots, sizeof(int64_t));
    slot_of = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(int64_t));
    if (!slot_keys || !slot_counts || !slot_of) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t key = keys[i], slot = (key ^ (key >> 29)) & mask;
        while (slot_counts[slot] && slot_keys[slot] != key) slot = (slot + 1) & mask;
        slot_keys[slot] = key;
        slot_counts[slot]++;
        slot_of[i] = (int64_t)slot;
    }
    for (Py_ssize_t i = 0; i < count; i++) counts[i] = slot_counts[slot_of[i]];
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&keys_view);
    PyBuffer_Release(&counts_view);
    PyMem_Free(slot_keys);
    PyMem_Free(slot_counts);
    PyMem_Free(slot_of);
    return result;
}

/* str.splitlines()'s line boundaries (\r\n counts as one) */
static inline int is_line_break(Py_UCS4 c) {
    return c <= 0x1E ? (c >= 0x0A && c <= 0x0D) || c >= 0x1C : c == 0x85 || c == 0x2028 || c == 0x2029;
}

/* one text's (bullet lines, ellipsis lines, lines): line.lstrip().startswith(("•", "-")) and
 * line.rstrip().endswith(("...", "…")) over text.splitlines(); generated per string kind */
#define DEFINE_LINE_SHAPES(NAME, UNIT)                                                                 \
    static void NAME(const UNIT *s, Py_ssize_t n, int64_t *bullets, int64_t *ellipses, int64_t *lines) {\
        int64_t bullet = 0, ellipsis = 0, count = 0;                                                    \
        for (Py_ssize_t i = 0; i < n;) {                                                                \
            Py_ssize_t start = i;                                                                       \
            while (i < n && !is_line_break(s[i])) i++;                                                  \
            Py_ssize_t end = i, first = start, last = end;                                              \
            if (i < n) i += s[i] == '\r' && i + 1 < n && s[i + 1] == '\n' ? 2 : 1;                       \
            count++;                                                                                    \
            while (first < end && Py_UNICODE_ISSPACE(s[first])) first++;                                \
            if (first == end) continue;                                                                 \
            bullet += s[first] == '-' || s[first] == 0x2022;                                            \
            while (Py_UNICODE_ISSPACE(s[last - 1])) last--;                                             \
            ellipsis += s[last - 1] == 0x2026 ||                                                        \
                        (last - start >= 3 && s[last - 1] == '.' && s[last - 2] == '.' && s[last - 3] == '.'); \
        }                                                                                               \
        *bullets = bullet;                                                                              \
        *ellipses = ellipsis;                                                                           \
        *lines = count;                                                                                 \
    }
DEFINE_LINE_SHAPES(line_shapes_ucs1, Py_UCS1)
DEFINE_LINE_SHAPES(line_shapes_ucs2, Py_UCS2)
DEFINE_LINE_SHAPES(line_shapes_ucs4, Py_UCS4)

static PyObject *line_shapes(PyObject *self, PyObject *args) {
    PyObject *texts, *objs[3];
    if (!PyArg_ParseTuple(args, "OOOO", &texts, &objs[0], &objs[1], &objs[2])) return NULL;
    static const char *names[3] = {"bullets", "ellipses", "lines"};
    PyObject *sequence = PySequence_Fast(texts, "texts must be a sequence of str");
    if (!sequence) return NULL;
    Py_buffer views[3];
    int got = 0;
    PyObject *result = NULL;
    Py_ssize_t n_texts = PySequence_Fast_GET_SIZE(sequence);
    for (; got < 3; got++)
        if (get_buffer(objs[got], &views[got], 8, 1, names[got]) < 0) goto done;
    for (int i = 0; i < 3; i++) {
        if (views[i].len / 8 != n_texts) {
            PyErr_Format(PyExc_ValueError, "%s: %zd items for %zd texts", names[i], views[i].len / 8, n_texts);
            goto done;
        }
    }
    int64_t *bullets = views[0].buf, *ellipses = views[1].buf, *lines = views[2].buf;
    for (Py_ssize_t i = 0; i < n_texts; i++) {
        PyObject *text = PySequence_Fast_GET_ITEM(sequence, i);
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "texts must be str, not %.100s", Py_TYPE(text)->tp_name);
            goto done;
        }
        Py_ssize_t n = PyUnicode_GET_LENGTH(text);
        const void *data = PyUnicode_DATA(text);
        switch (PyUnicode_KIND(text)) {
        case PyUnicode_1BYTE_KIND: line_shapes_ucs1(data, n, bullets + i, ellipses + i, lines + i); break;
        case PyUnicode_2BYTE_KIND: line_shapes_ucs2(data, n, bullets + i, ellipses + i, lines + i); break;
        default: line_shapes_ucs4(data, n, bullets + i, ellipses + i, lines + i);
        }
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    Py_DECREF(sequence);
    return result;
}

static PyMethodDef methods[] = {
    {"key_counts", key_counts, METH_VARARGS, "key_counts(keys, counts): occurrences of each position's key"},
    {"greedy_repeated_chars", greedy_repeated_chars, METH_VARARGS,
     "greedy_repeated_chars(n, positions, keys, chars, docs, totals): datatrove's duplicate n-gram scan"},
    {"line_shapes", line_shapes, METH_VARARGS,
     "line_shapes(texts, bullets, ellipses, lines): Gopher quality's bullet and ellipsis line counts"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gopher", "Gopher's hot loops in C", -1, methods};

PyMODINIT_FUNC PyInit__gopher(void) { return PyModule_Create(&module); }
