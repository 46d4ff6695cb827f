/* spaCy's English tokenizer on whitespace-free chunks, and the word tables around it, in C, for
 * selectd's rule scorers.
 *
 * The same algorithm as affix_split.py's EnglishSplitter (spaCy's _split_affixes, _attach_tokens and
 * _apply_special_cases, one chunk at a time). Nothing of spaCy's data is written here: byte_program.py
 * compiles the prefix, suffix and infix regexes to "programs" (ordered alternatives of
 * character-set steps, greedy single-character repeats, fixed-width lookarounds and anchors: what
 * those regexes are made of) and passes them in with the special cases and the special-case merge
 * table. The URL regex is called back in Python (it is reached only by strings with a '.' and no
 * affix). It exists because the split of a chunk not seen before costs ~12 µs in Python, well
 * under 1 µs here, and unseen chunks are most of a rule scorer's time on real text.
 *
 * Splitter(prefix, suffix, infix, specials, merges, longest_merge, url_match, url_dots, url_tld)
 *   prefix, suffix, infix: (nodes, alternatives, sets, ranges) bytes packed by byte_program.py's
 *     compile_program (layouts below)
 *   specials: list of (str, token lengths as uint32 bytes)
 *   merges: list of (tuple of str pieces, token lengths as uint32 bytes)
 *   longest_merge: most pieces in one merge key; url_match: callable(str) -> match or None
 *   url_dots, url_tld: what every URL contains (byte_program.url_prefilter): at least url_dots '.', or
 *     a '.' and two characters of the set url_tld (a program of one set); url_dots 0: no prefilter
 * Splitter.split(chunk) -> tuple of token strings
 *
 * WordTables(splitter): vocabulary.py's WordTokenizer tables (PythonWordTables there, the same
 *   methods): token -> id (the vocabulary) and chunk -> its token ids and word count (the chunk
 *   table), both keyed by code points. A known chunk costs a hash probe, a new one its split;
 *   no Python object is made but the string of a new token.
 * WordTables.tokenize(texts) -> (ids, offsets): the token ids of every text's whitespace-separated
 *   chunks (str.split()), concatenated, and each text's offset into them (len(texts) + 1), both
 *   bytearrays of int64; new chunks are split and their tokens interned, in order
 * WordTables.count_words(texts) -> bytearray of int64: each text's number of words; a chunk of letters
 *   only that is no special case counts one, the others come from the chunk table, a new one added
 *   with its count and its tokens not interned (tokenize splits it again when it first meets it)
 * WordTables.intern(token) -> id; .strings: the token strings by id (a list: read only);
 *   .chunks: chunks in the chunk table; .clear_chunks(): empty it (the vocabulary stays);
 *   .splits: chunks split so far
 *
 * token_features(strings, start, non_word, enders, is_punct) -> (lengths, flags): Vocabulary.sync's
 *   per-token features of strings[start:]; the two character sets are bytes of sorted uint32 code
 *   points; is_punct(token) -> bool, asked only about tokens without a letter or digit (those are
 *   never all punctuation). lengths: int64 bytes; flags: one byte per token, FEATURE_* bits below.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OP_SET = 0, OP_REPEAT = 1, OP_BEGIN = 2, OP_END = 3, OP_BEHIND = 4, OP_AHEAD = 5 };
#define UNBOUNDED 0xFFFFFFFFu

/* layouts shared with byte_program.py (struct "<2QII", "<II", "<BBHIII", "<IIiII") */
typedef struct {
    uint64_t ascii[2];              /* bitmap of the ASCII members */
    uint32_t first_range, n_ranges; /* the others: ranges[first_range .. first_range + n_ranges) */
} CharSet;

typedef struct { uint32_t low, high; } Range;  /* inclusive, sorted, disjoint */

typedef struct {
    uint8_t op, negative;   /* negative: a negative lookaround */
    uint16_t n_sets;        /* lookaround: how many consecutive sets (one per character) */
    uint32_t set;           /* (first) set's index */
    uint32_t min, max;      /* repeat bounds (max UNBOUNDED) */
} Node;

typedef struct {
    uint32_t first_node, n_nodes;
    int32_t max_width;          /* characters consumed at most, -1 unbounded */
    uint32_t first, last;       /* sets: the characters a match can start / end with */
} Alt;

typedef struct {
    Node *nodes;
    Alt *alts;
    CharSet *sets;
    Range *ranges;
    Py_ssize_t n_nodes, n_alts, n_sets, n_ranges;
    /* alternatives (indices, pattern order) whose match can begin with character c < 128, or
     * (c = 128) with some non-ASCII character: candidates[candidate_start[c] .. candidate_start[c + 1]) */
    uint32_t candidate_start[130];
    uint32_t *candidates;
    /* the longest match that can end with character c < 128 (c = 128: any non-ASCII), -1 unbounded */
    int32_t widest_ending[129];
} Program;

static inline int in_set(const Program *p, const CharSet *set, Py_UCS4 c) {
    if (c < 128) return (int)((set->ascii[c >> 6] >> (c & 63)) & 1);
    const Range *r = p->ranges + set->first_range;
    uint32_t low = 0, high = set->n_ranges;
    while (low < high) {
        uint32_t mid = (low + high) / 2;
        if (c < r[mid].low) high = mid;
        else if (c > r[mid].high) low = mid + 1;
        else return 1;
    }
    return 0;
}

static inline int edge_class(Py_UCS4 c) { return c < 128 ? (int)c : 128; }

static void program_free(Program *p) {
    PyMem_Free(p->nodes);
    PyMem_Free(p->alts);
    PyMem_Free(p->sets);
    PyMem_Free(p->ranges);
    PyMem_Free(p->candidates);
    memset(p, 0, sizeof(*p));
}

static int copy_bytes(PyObject *obj, size_t item, void **out, Py_ssize_t *count, const char *what) {
    if (!PyBytes_Check(obj) || PyBytes_GET_SIZE(obj) % (Py_ssize_t)item) {
        PyErr_Format(PyExc_ValueError, "%s program: expected bytes of %zu-byte records", what, item);
        return -1;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(obj);
    *out = PyMem_Malloc(size ? (size_t)size : 1);
    if (!*out) { PyErr_NoMemory(); return -1; }
    memcpy(*out, PyBytes_AS_STRING(obj), (size_t)size);
    *count = size / (Py_ssize_t)item;
    return 0;
}

static int program_load(Program *p, PyObject *spec, const char *name) {
    PyObject *nodes, *alts, *sets, *ranges;
    if (!PyArg_ParseTuple(spec, "OOOO", &nodes, &alts, &sets, &ranges)) return -1;
    if (copy_bytes(nodes, sizeof(Node), (void **)&p->nodes, &p->n_nodes, name) < 0 ||
        copy_bytes(alts, sizeof(Alt), (void **)&p->alts, &p->n_alts, name) < 0 ||
        copy_bytes(sets, sizeof(CharSet), (void **)&p->sets, &p->n_sets, name) < 0 ||
        copy_bytes(ranges, sizeof(Range), (void **)&p->ranges, &p->n_ranges, name) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < p->n_sets; i++)
        if ((Py_ssize_t)p->sets[i].first_range + p->sets[i].n_ranges > p->n_ranges) {
            PyErr_Format(PyExc_ValueError, "%s program: bad set %zd", name, i);
            return -1;
        }
    for (Py_ssize_t i = 0; i < p->n_nodes; i++) {
        const Node *node = &p->nodes[i];
        Py_ssize_t used = node->op == OP_BEHIND || node->op == OP_AHEAD ? node->n_sets
                        : node->op == OP_SET || node->op == OP_REPEAT ? 1 : 0;
        if (node->op > OP_AHEAD || (Py_ssize_t)node->set + used > p->n_sets) {
            PyErr_Format(PyExc_ValueError, "%s program: bad node %zd", name, i);
            return -1;
        }
    }
    for (Py_ssize_t a = 0; a < p->n_alts; a++) {
        const Alt *alt = &p->alts[a];
        if (alt->n_nodes == 0 || (Py_ssize_t)alt->first_node + alt->n_nodes > p->n_nodes ||
            (Py_ssize_t)alt->first >= p->n_sets || (Py_ssize_t)alt->last >= p->n_sets) {
            PyErr_Format(PyExc_ValueError, "%s program: bad alternative %zd", name, a);
            return -1;
        }
    }
    p->candidates = PyMem_Malloc(sizeof(uint32_t) * 129 * (size_t)(p->n_alts ? p->n_alts : 1));
    if (!p->candidates) { PyErr_NoMemory(); return -1; }
    uint32_t used = 0;
    for (int c = 0; c <= 128; c++) {
        p->candidate_start[c] = used;
        p->widest_ending[c] = 0;
        for (Py_ssize_t a = 0; a < p->n_alts; a++) {
            const Alt *alt = &p->alts[a];
            int starts = c < 128 ? in_set(p, &p->sets[alt->first], (Py_UCS4)c) : p->sets[alt->first].n_ranges > 0;
            int ends = c < 128 ? in_set(p, &p->sets[alt->last], (Py_UCS4)c) : p->sets[alt->last].n_ranges > 0;
            if (starts) p->candidates[used++] = (uint32_t)a;
            if (ends && p->widest_ending[c] >= 0)
                p->widest_ending[c] = alt->max_width < 0 ? -1
                    : alt->max_width > p->widest_ending[c] ? alt->max_width : p->widest_ending[c];
        }
    }
    p->candidate_start[129] = used;
    return 0;
}

/* End of a match of nodes [node, end) starting at pos within s[lo:hi] (the string as the regex
 * sees it), -1 when none: the regex engine's depth-first order, greedy repeats backing off. */
static Py_ssize_t match_nodes(const Program *p, const Node *node, const Node *end,
                              const Py_UCS4 *s, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t pos) {
    for (; node < end; node++) {
        switch (node->op) {
        case OP_SET:
            if (pos >= hi || !in_set(p, &p->sets[node->set], s[pos])) return -1;
            pos++;
            break;
        case OP_REPEAT: {
            const CharSet *set = &p->sets[node->set];
            Py_ssize_t limit = hi - pos, run = 0;
            if (node->max != UNBOUNDED && (Py_ssize_t)node->max < limit) limit = node->max;
            while (run < limit && in_set(p, set, s[pos + run])) run++;
            if (node + 1 == end) return run >= (Py_ssize_t)node->min ? pos + run : -1;
            for (; run >= (Py_ssize_t)node->min; run--) {
                Py_ssize_t matched = match_nodes(p, node + 1, end, s, lo, hi, pos + run);
                if (matched >= 0) return matched;
            }
            return -1;
        }
        case OP_BEGIN:
            if (pos != lo) return -1;
            break;
        case OP_END:
            if (pos != hi) return -1;
            break;
        default: { /* OP_BEHIND, OP_AHEAD */
            Py_ssize_t width = node->n_sets, from = node->op == OP_BEHIND ? pos - width : pos;
            int holds = from >= lo && from + width <= hi;
            for (Py_ssize_t j = 0; holds && j < width; j++) holds = in_set(p, &p->sets[node->set + j], s[from + j]);
            if (holds == node->negative) return -1;
        }
        }
    }
    return pos;
}

/* End of the first alternative (pattern order) matching at pos and, when ending_with >= 0, able
 * to end with that character; -1 when none. Every alternative consumes a character (byte_program.py
 * refuses the others), so none matches at hi. */
static Py_ssize_t match_at(const Program *p, const Py_UCS4 *s, Py_ssize_t lo, Py_ssize_t hi,
                           Py_ssize_t pos, int64_t ending_with) {
    if (pos >= hi) return -1;
    int c = edge_class(s[pos]);
    for (uint32_t i = p->candidate_start[c]; i < p->candidate_start[c + 1]; i++) {
        const Alt *alt = &p->alts[p->candidates[i]];
        if (ending_with >= 0 && !in_set(p, &p->sets[alt->last], (Py_UCS4)ending_with)) continue;
        Py_ssize_t matched = match_nodes(p, p->nodes + alt->first_node, p->nodes + alt->first_node + alt->n_nodes,
                                         s, lo, hi, pos);
        if (matched >= 0) return matched;
    }
    return -1;
}

/* prefix_search: its alternatives are anchored at the start, so a match at lo or none */
static Py_ssize_t prefix_len(const Program *p, const Py_UCS4 *s, Py_ssize_t lo, Py_ssize_t hi) {
    Py_ssize_t matched = match_at(p, s, lo, hi, lo, -1);
    return matched < 0 ? 0 : matched - lo;
}

/* suffix_search: the leftmost match; every alternative is anchored at the end (byte_program.py
 * checks), so it ends at hi and starts no earlier than the widest alternative allows */
static Py_ssize_t suffix_len(const Program *p, const Py_UCS4 *s, Py_ssize_t lo, Py_ssize_t hi) {
    if (hi <= lo) return 0;
    int32_t widest = p->widest_ending[edge_class(s[hi - 1])];
    if (widest == 0) return 0;
    Py_ssize_t pos = widest < 0 || hi - lo <= widest ? lo : hi - widest;
    for (; pos < hi; pos++)
        if (match_at(p, s, lo, hi, pos, s[hi - 1]) >= 0) return hi - pos;
    return 0;
}

/* ---- code-point-string hash tables ------------------------------------------------------------
 * The splitter's special cases, merge keys and merge first pieces, and the word tables' vocabulary
 * and chunk table: open addressing, the table doubled when half full. A key of up to 8 code points
 * below 256 (most words) is stored packed in its slot, so finding it touches one cache line; the
 * others are copied into one growing array of code points (no allocation per key). */

typedef struct {
    uint64_t hash;
    uint64_t key;           /* the packed key (Key.packed), or its offset in Table.keys */
    int32_t len;
    int32_t value;          /* -1: empty slot */
} Entry;

typedef struct {
    Entry *slots;
    size_t mask;
    Py_ssize_t size;
    Py_UCS4 *keys;
    Py_ssize_t keys_used, keys_capacity;
} Table;

/* a key to look up: its code points, their FNV-1a hash, and whether it is stored packed (which
 * depends only on the key, so equal keys are stored alike) */
typedef struct {
    const Py_UCS4 *s;
    Py_ssize_t n;
    uint64_t hash, packed;
    int is_packed;
} Key;

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull
#define PACKED_MAX 8

static inline Key key_of(const Py_UCS4 *s, Py_ssize_t n) {
    Key key = {s, n, FNV_OFFSET, 0, n <= PACKED_MAX};
    for (Py_ssize_t i = 0; i < n; i++) {
        key.hash = (key.hash ^ s[i]) * FNV_PRIME;
        if (i < PACKED_MAX) key.packed |= (uint64_t)(s[i] & 0xFF) << (8 * i);
        if (s[i] > 0xFF) key.is_packed = 0;
    }
    return key;
}

/* FNV's low bits alone cluster; fold the high half in */
static inline size_t first_slot(const Table *t, uint64_t hash) { return (size_t)(hash ^ (hash >> 29)) & t->mask; }

static int table_alloc_slots(Table *t, size_t slots) {
    t->slots = PyMem_Malloc(slots * sizeof(Entry));
    if (!t->slots) { PyErr_NoMemory(); return -1; }
    for (size_t i = 0; i < slots; i++) t->slots[i].value = -1;
    t->mask = slots - 1;
    return 0;
}

/* an empty table with room for capacity keys before it first grows */
static int table_init(Table *t, Py_ssize_t capacity) {
    size_t slots = 16;
    while (slots < (size_t)capacity * 2) slots *= 2;
    memset(t, 0, sizeof(*t));
    return table_alloc_slots(t, slots);
}

static void table_free(Table *t) {
    PyMem_Free(t->slots);
    PyMem_Free(t->keys);
    memset(t, 0, sizeof(*t));
}

/* empty the table, keeping its slots and key space */
static void table_clear(Table *t) {
    for (size_t i = 0; i <= t->mask; i++) t->slots[i].value = -1;
    t->size = 0;
    t->keys_used = 0;
}

static inline int same_key(const Table *t, const Entry *e, const Key *key) {
    if (e->hash != key->hash || e->len != key->n) return 0;
    if (key->is_packed) return e->key == key->packed;
    const Py_UCS4 *stored = t->keys + e->key;
    for (Py_ssize_t i = 0; i < key->n; i++)
        if (stored[i] != key->s[i]) return 0;
    return 1;
}

/* the slot holding key, or the empty slot where it would go */
static inline Entry *table_find(const Table *t, const Key *key) {
    for (size_t slot = first_slot(t, key->hash);; slot = (slot + 1) & t->mask) {
        Entry *e = &t->slots[slot];
        if (e->value < 0 || same_key(t, e, key)) return e;
    }
}

static int32_t table_get(const Table *t, const Py_UCS4 *s, Py_ssize_t n) {
    Key key = key_of(s, n);
    return table_find(t, &key)->value;
}

/* double the slots, rehashing every entry */
static int table_grow(Table *t) {
    Entry *old = t->slots;
    size_t old_slots = t->mask + 1;
    if (table_alloc_slots(t, old_slots * 2) < 0) { t->slots = old; return -1; }
    for (size_t i = 0; i < old_slots; i++) {
        if (old[i].value < 0) continue;
        size_t slot = first_slot(t, old[i].hash);
        while (t->slots[slot].value >= 0) slot = (slot + 1) & t->mask;
        t->slots[slot] = old[i];
    }
    PyMem_Free(old);
    return 0;
}

/* insert key with value >= 0; a key already there keeps its value */
static int table_put_key(Table *t, const Key *key, int32_t value) {
    Py_ssize_t n = key->n;
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "string too long for a word table");
        return -1;
    }
    if ((size_t)(t->size + 1) * 2 > t->mask + 1 && table_grow(t) < 0) return -1;
    Entry *e = table_find(t, key);
    if (e->value >= 0) return 0;
    uint64_t stored = key->packed;
    if (!key->is_packed) {
        if (t->keys_used + n > t->keys_capacity) {
            Py_ssize_t capacity = t->keys_capacity ? t->keys_capacity : 1024;
            while (capacity < t->keys_used + n) capacity *= 2;
            Py_UCS4 *grown = PyMem_Realloc(t->keys, sizeof(Py_UCS4) * (size_t)capacity);
            if (!grown) { PyErr_NoMemory(); return -1; }
            t->keys = grown;
            t->keys_capacity = capacity;
        }
        memcpy(t->keys + t->keys_used, key->s, sizeof(Py_UCS4) * (size_t)n);
        stored = (uint64_t)t->keys_used;
        t->keys_used += n;
    }
    *e = (Entry){key->hash, stored, (int32_t)n, value};
    t->size++;
    return 0;
}

static int table_put(Table *t, const Py_UCS4 *s, Py_ssize_t n, int32_t value) {
    Key key = key_of(s, n);
    return table_put_key(t, &key, value);
}

/* ---- the splitter ----------------------------------------------------------------------------- */

typedef struct { Py_ssize_t start, end, length; } Match;

typedef struct {
    PyObject_HEAD
    Program prefix, suffix, infix;
    Table specials, merges, merge_starts;
    uint32_t *lengths;          /* token lengths of every segmentation, flat */
    Py_ssize_t *seg_start, *seg_count;
    Py_ssize_t n_segs;
    int longest_merge;
    Py_ssize_t longest_merge_key, longest_special;
    uint64_t special_filter[64];  /* special_bit of every special case: most other strings miss it */
    PyObject *url_match;
    int url_dots;
    Program url_tld;            /* sets[0]: top-level domain characters */
    /* scratch, grown to the longest chunk seen */
    Py_UCS4 *text;
    Py_ssize_t *ends, *suffix_ends, *merged, *chosen;
    char *taken;
    Py_ssize_t capacity;
    Py_UCS4 *key;               /* a merge key being built (longest_merge_key code points) */
    Match *matches;
    Py_ssize_t match_capacity;
} Splitter;

static int reserve(Splitter *self, Py_ssize_t n) {
    if (n <= self->capacity) return 0;
    Py_ssize_t capacity = self->capacity ? self->capacity : 64;
    while (capacity < n) capacity *= 2;
    PyMem_Free(self->text); PyMem_Free(self->ends); PyMem_Free(self->suffix_ends);
    PyMem_Free(self->merged); PyMem_Free(self->chosen); PyMem_Free(self->taken);
    self->text = PyMem_Malloc(sizeof(Py_UCS4) * (size_t)capacity);
    self->ends = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)capacity);
    self->suffix_ends = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)capacity);
    self->merged = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)capacity);
    self->chosen = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)capacity);
    self->taken = PyMem_Malloc((size_t)capacity);
    if (!self->text || !self->ends || !self->suffix_ends || !self->merged || !self->chosen || !self->taken) {
        self->capacity = 0;
        PyErr_NoMemory();
        return -1;
    }
    self->capacity = capacity;
    return 0;
}

/* append the token ends of a segmentation of the text from start on */
static inline Py_ssize_t emit_segmentation(const Splitter *self, int32_t seg, Py_ssize_t start,
                                           Py_ssize_t *ends, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < self->seg_count[seg]; i++) {
        start += self->lengths[self->seg_start[seg] + i];
        ends[count++] = start;
    }
    return count;
}

/* one of special_filter's 4096 bits, from a string's length and first and last characters: a
 * string whose bit is clear is no special case, known without hashing or copying it */
static inline unsigned special_bit(Py_ssize_t len, Py_UCS4 first, Py_UCS4 last) {
    return (unsigned)(((uint64_t)len * 0x9E3779B1u + first * 0x85EBCA77u + last * 0xC2B2AE3Du) >> 7) & 4095u;
}

static inline int maybe_special(const Splitter *self, Py_ssize_t len, Py_UCS4 first, Py_UCS4 last) {
    unsigned bit = special_bit(len, first, last);
    return len <= self->longest_special && (self->special_filter[bit >> 6] >> (bit & 63)) & 1;
}

static inline int32_t special(const Splitter *self, const Py_UCS4 *s, Py_ssize_t lo, Py_ssize_t hi) {
    return hi > lo && maybe_special(self, hi - lo, s[lo], s[hi - 1]) ? table_get(&self->specials, s + lo, hi - lo) : -1;
}

/* str.isalpha() of s[lo:hi] (not empty) */
static inline int all_letters(const Py_UCS4 *s, Py_ssize_t lo, Py_ssize_t hi) {
    for (Py_ssize_t i = lo; i < hi; i++)
        if (!Py_UNICODE_ISALPHA(s[i])) return 0;
    return 1;
}

/* spaCy's url_match on source[lo:hi], called in Python: 1, 0, -1 on error */
static int url_matches(Splitter *self, PyObject *source, Py_ssize_t lo, Py_ssize_t hi) {
    PyObject *string = PyUnicode_Substring(source, lo, hi);
    if (!string) return -1;
    PyObject *match = PyObject_CallOneArg(self->url_match, string);
    Py_DECREF(string);
    if (!match) return -1;
    int found = match != Py_None;
    Py_DECREF(match);
    return found;
}

/* whether s[lo:hi] may be a URL: the '.' every URL has, and the prefilter's dots or top-level domain */
static int may_be_url(const Splitter *self, const Py_UCS4 *s, Py_ssize_t lo, Py_ssize_t hi) {
    int dots = 0;
    const CharSet *tld = &self->url_tld.sets[0];
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (s[i] != '.') continue;
        if (!self->url_dots || ++dots >= self->url_dots) return 1;
        if (i + 2 < hi && in_set(&self->url_tld, tld, s[i + 1]) && in_set(&self->url_tld, tld, s[i + 2])) return 1;
    }
    return 0;
}

/* EnglishSplitter._split / _split_once, iteratively (spaCy's loop): prefixes are emitted as they
 * are peeled, suffixes stacked and emitted last. Token ends go to self->ends; returns their
 * count, -1 on error. */
static Py_ssize_t split_affixes(Splitter *self, PyObject *source, Py_ssize_t base, const Py_UCS4 *s, Py_ssize_t n) {
    Py_ssize_t *ends = self->ends, *suffix_ends = self->suffix_ends;
    Py_ssize_t count = 0, n_suffixes = 0, lo = 0, hi = n;
    while (lo < hi) {
        int32_t seg = special(self, s, lo, hi);
        if (seg >= 0) { count = emit_segmentation(self, seg, lo, ends, count); break; }
        if (all_letters(s, lo, hi)) { ends[count++] = hi; break; }
        Py_ssize_t pre = prefix_len(&self->prefix, s, lo, hi);
        if (pre && (seg = special(self, s, lo + pre, hi)) >= 0) {
            ends[count++] = lo + pre;
            count = emit_segmentation(self, seg, lo + pre, ends, count);
            break;
        }
        Py_ssize_t suf = suffix_len(&self->suffix, s, lo + pre, hi);
        if (suf && (seg = special(self, s, lo, hi - suf)) >= 0) {
            count = emit_segmentation(self, seg, lo, ends, count);
            suffix_ends[n_suffixes++] = hi;
            break;
        }
        if (pre && suf && pre + suf <= hi - lo) {
            ends[count++] = lo + pre;
            suffix_ends[n_suffixes++] = hi;
            lo += pre;
            hi -= suf;
        } else if (pre) {
            ends[count++] = lo + pre;
            lo += pre;
        } else if (suf) {
            suffix_ends[n_suffixes++] = hi;
            hi -= suf;
        } else {
            int url = may_be_url(self, s, lo, hi) ? url_matches(self, source, base + lo, base + hi) : 0;
            if (url < 0) return -1;
            if (url) { ends[count++] = hi; break; }
            /* infixes: finditer over s[lo:hi]; one at lo is ignored, as spaCy does */
            Py_ssize_t start = lo;
            for (Py_ssize_t pos = lo; pos < hi;) {
                Py_ssize_t end = match_at(&self->infix, s, lo, hi, pos, -1);
                if (end < 0) { pos++; continue; }
                if (pos != lo) {
                    if (pos != start) ends[count++] = pos;
                    ends[count++] = end;
                    start = end;
                }
                pos = end;
            }
            if (start < hi) ends[count++] = hi;
            break;
        }
    }
    while (n_suffixes) ends[count++] = suffix_ends[--n_suffixes];
    return count;
}

static int compare_matches(const void *a, const void *b) {
    const Match *x = a, *y = b;
    if (x->length != y->length) return x->length > y->length ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

/* the merge key of tokens [start, end): each token as its length then its code points; -1 when
 * longer than any merge key */
static Py_ssize_t merge_key(Splitter *self, const Py_UCS4 *s, Py_ssize_t start, Py_ssize_t end) {
    Py_ssize_t key_len = 0;
    for (Py_ssize_t token = start; token < end; token++) {
        Py_ssize_t from = token ? self->ends[token - 1] : 0, len = self->ends[token] - from;
        if (key_len + len + 1 > self->longest_merge_key) return -1;
        self->key[key_len] = (Py_UCS4)len;
        memcpy(self->key + key_len + 1, s + from, sizeof(Py_UCS4) * (size_t)len);
        key_len += len + 1;
    }
    return key_len;
}

/* EnglishSplitter._merge_special_cases on the token ends: longest, then leftmost matches first;
 * returns the new token count, -1 on error */
static Py_ssize_t merge_special_cases(Splitter *self, const Py_UCS4 *s, Py_ssize_t count) {
    Py_ssize_t *ends = self->ends, n_matches = 0;
    for (Py_ssize_t start = 0; start + 1 < count; start++) {
        Py_ssize_t from = start ? ends[start - 1] : 0;
        if (table_get(&self->merge_starts, s + from, ends[start] - from) < 0) continue;
        for (Py_ssize_t end = start + 2; end <= count && end - start <= self->longest_merge; end++) {
            Py_ssize_t key_len = merge_key(self, s, start, end);
            if (key_len < 0) break;  /* longer windows have longer keys */
            if (table_get(&self->merges, self->key, key_len) < 0) continue;
            if (n_matches == self->match_capacity) {
                Py_ssize_t capacity = self->match_capacity ? self->match_capacity * 2 : 16;
                Match *grown = PyMem_Realloc(self->matches, sizeof(Match) * (size_t)capacity);
                if (!grown) { PyErr_NoMemory(); return -1; }
                self->matches = grown;
                self->match_capacity = capacity;
            }
            self->matches[n_matches++] = (Match){start, end, end - start};
        }
    }
    if (!n_matches) return count;
    qsort(self->matches, (size_t)n_matches, sizeof(Match), compare_matches);
    memset(self->taken, 0, (size_t)count);
    for (Py_ssize_t i = 0; i < count; i++) self->chosen[i] = -1;
    for (Py_ssize_t m = 0; m < n_matches; m++) {
        const Match *match = &self->matches[m];
        if (!self->taken[match->start] && !self->taken[match->end - 1]) self->chosen[match->start] = match->end;
        memset(self->taken + match->start, 1, (size_t)match->length);  /* as affix_split.py: taken either way */
    }
    Py_ssize_t merged = 0;
    for (Py_ssize_t index = 0; index < count;) {
        Py_ssize_t end = self->chosen[index];
        if (end < 0) {
            self->merged[merged++] = ends[index++];
            continue;
        }
        int32_t seg = table_get(&self->merges, self->key, merge_key(self, s, index, end));
        merged = emit_segmentation(self, seg, index ? ends[index - 1] : 0, self->merged, merged);
        index = end;
    }
    memcpy(self->ends, self->merged, sizeof(Py_ssize_t) * (size_t)merged);
    return merged;
}

/* token ends of the chunk source[start:end] in self->ends (relative to start), its code points in
 * self->text; returns their count, -1 on error */
static Py_ssize_t split_chunk(Splitter *self, PyObject *source, Py_ssize_t start, Py_ssize_t end) {
    Py_ssize_t n = end - start;
    if (reserve(self, n + 1) < 0) return -1;
    int kind = PyUnicode_KIND(source);
    const void *data = PyUnicode_DATA(source);
    for (Py_ssize_t i = 0; i < n; i++) self->text[i] = PyUnicode_READ(kind, data, start + i);
    Py_ssize_t count = split_affixes(self, source, start, self->text, n);
    return count > 1 ? merge_special_cases(self, self->text, count) : count;
}

static PyObject *splitter_split(Splitter *self, PyObject *chunk) {
    if (!PyUnicode_Check(chunk)) {
        PyErr_SetString(PyExc_TypeError, "split() takes a str");
        return NULL;
    }
    Py_ssize_t count = split_chunk(self, chunk, 0, PyUnicode_GET_LENGTH(chunk));
    if (count < 0) return NULL;
    PyObject *tokens = PyTuple_New(count);
    if (!tokens) return NULL;
    for (Py_ssize_t i = 0, start = 0; i < count; start = self->ends[i++]) {
        PyObject *token = PyUnicode_Substring(chunk, start, self->ends[i]);  /* the chunk itself when whole */
        if (!token) { Py_DECREF(tokens); return NULL; }
        PyTuple_SET_ITEM(tokens, i, token);
    }
    return tokens;
}

/* a segmentation (token lengths) appended to the flat arrays; returns its index */
static int32_t add_segmentation(Splitter *self, PyObject *lengths, Py_ssize_t expected_total) {
    if (!PyBytes_Check(lengths) || PyBytes_GET_SIZE(lengths) % sizeof(uint32_t) || PyBytes_GET_SIZE(lengths) == 0) {
        PyErr_SetString(PyExc_ValueError, "token lengths must be non-empty uint32 bytes");
        return -1;
    }
    Py_ssize_t count = PyBytes_GET_SIZE(lengths) / (Py_ssize_t)sizeof(uint32_t), start = 0, total = 0;
    if (self->n_segs) start = self->seg_start[self->n_segs - 1] + self->seg_count[self->n_segs - 1];
    uint32_t *grown = PyMem_Realloc(self->lengths, sizeof(uint32_t) * (size_t)(start + count));
    if (!grown) { PyErr_NoMemory(); return -1; }
    self->lengths = grown;
    Py_ssize_t *starts = PyMem_Realloc(self->seg_start, sizeof(Py_ssize_t) * (size_t)(self->n_segs + 1));
    if (!starts) { PyErr_NoMemory(); return -1; }
    self->seg_start = starts;
    Py_ssize_t *counts = PyMem_Realloc(self->seg_count, sizeof(Py_ssize_t) * (size_t)(self->n_segs + 1));
    if (!counts) { PyErr_NoMemory(); return -1; }
    self->seg_count = counts;
    memcpy(self->lengths + start, PyBytes_AS_STRING(lengths), sizeof(uint32_t) * (size_t)count);
    for (Py_ssize_t i = 0; i < count; i++) total += self->lengths[start + i];
    if (total != expected_total) {
        PyErr_SetString(PyExc_ValueError, "a special case's tokens do not spell its string");
        return -1;
    }
    self->seg_start[self->n_segs] = start;
    self->seg_count[self->n_segs] = count;
    return (int32_t)self->n_segs++;
}

/* specials: (str, lengths); merges: (tuple of str, lengths), keyed like merge_key */
static int load_table(Splitter *self, Table *table, PyObject *entries, int is_merge) {
    if (!PyList_Check(entries)) {
        PyErr_SetString(PyExc_TypeError, "special cases and merges must be lists of pairs");
        return -1;
    }
    if (table_init(table, PyList_GET_SIZE(entries)) < 0) return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
            (is_merge ? !PyTuple_Check(PyTuple_GET_ITEM(entry, 0)) : !PyUnicode_Check(PyTuple_GET_ITEM(entry, 0)))) {
            PyErr_SetString(PyExc_TypeError, is_merge ? "a merge must be (tuple of str, bytes)"
                                                      : "a special case must be (str, bytes)");
            return -1;
        }
        PyObject *key = PyTuple_GET_ITEM(entry, 0), *lengths = PyTuple_GET_ITEM(entry, 1);
        Py_ssize_t n_pieces = is_merge ? PyTuple_GET_SIZE(key) : 1, key_len = 0, spelled = 0;
        for (Py_ssize_t j = 0; j < n_pieces; j++) {
            PyObject *piece = is_merge ? PyTuple_GET_ITEM(key, j) : key;
            if (!PyUnicode_Check(piece) || PyUnicode_GET_LENGTH(piece) == 0) {
                PyErr_SetString(PyExc_TypeError, "special-case strings must be non-empty str");
                return -1;
            }
            spelled += PyUnicode_GET_LENGTH(piece);
            key_len += PyUnicode_GET_LENGTH(piece) + (is_merge ? 1 : 0);
        }
        if (n_pieces == 0) {
            PyErr_SetString(PyExc_ValueError, "empty merge key");
            return -1;
        }
        Py_UCS4 *k = PyMem_Malloc(sizeof(Py_UCS4) * (size_t)key_len);
        if (!k) { PyErr_NoMemory(); return -1; }
        Py_ssize_t at = 0;
        for (Py_ssize_t j = 0; j < n_pieces; j++) {
            PyObject *piece = is_merge ? PyTuple_GET_ITEM(key, j) : key;
            Py_ssize_t len = PyUnicode_GET_LENGTH(piece);
            if (is_merge) k[at++] = (Py_UCS4)len;
            PyUnicode_AsUCS4(piece, k + at, len, 0);
            at += len;
        }
        int32_t seg = add_segmentation(self, lengths, spelled);
        int failed = seg < 0 || table_put(table, k, key_len, seg) < 0 ||
                     (is_merge && table_put(&self->merge_starts, k + 1, k[0], 0) < 0);
        PyMem_Free(k);
        if (failed) return -1;
        if (is_merge && key_len > self->longest_merge_key) self->longest_merge_key = key_len;
        if (!is_merge) {
            unsigned bit = special_bit(key_len, PyUnicode_READ_CHAR(key, 0), PyUnicode_READ_CHAR(key, key_len - 1));
            self->special_filter[bit >> 6] |= (uint64_t)1 << (bit & 63);
            if (key_len > self->longest_special) self->longest_special = key_len;
        }
    }
    return 0;
}

static int splitter_init(Splitter *self, PyObject *args, PyObject *kwargs) {
    PyObject *prefix, *suffix, *infix, *specials, *merges, *url_match, *url_tld;
    int longest_merge, url_dots;
    static char *keywords[] = {"prefix", "suffix", "infix", "specials", "merges", "longest_merge", "url_match",
                               "url_dots", "url_tld", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!O!O!iOiO!:Splitter", keywords, &PyTuple_Type, &prefix,
                                     &PyTuple_Type, &suffix, &PyTuple_Type, &infix, &PyList_Type, &specials,
                                     &PyList_Type, &merges, &longest_merge, &url_match, &url_dots,
                                     &PyTuple_Type, &url_tld))
        return -1;
    if (self->url_match) {
        PyErr_SetString(PyExc_RuntimeError, "Splitter is already initialised");
        return -1;
    }
    if (!PyCallable_Check(url_match)) {
        PyErr_SetString(PyExc_TypeError, "url_match must be callable");
        return -1;
    }
    self->url_match = Py_NewRef(url_match);
    self->longest_merge = longest_merge;
    self->url_dots = url_dots;
    if (program_load(&self->prefix, prefix, "prefix") < 0 || program_load(&self->suffix, suffix, "suffix") < 0 ||
        program_load(&self->infix, infix, "infix") < 0 || program_load(&self->url_tld, url_tld, "url_tld") < 0 ||
        table_init(&self->merge_starts, PyList_GET_SIZE(merges)) < 0 ||
        load_table(self, &self->specials, specials, 0) < 0 || load_table(self, &self->merges, merges, 1) < 0)
        return -1;
    if (self->url_tld.n_sets != 1) {
        PyErr_SetString(PyExc_ValueError, "url_tld must hold one set");
        return -1;
    }
    self->key = PyMem_Malloc(sizeof(Py_UCS4) * (size_t)(self->longest_merge_key + 1));
    if (!self->key) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void splitter_dealloc(Splitter *self) {
    program_free(&self->prefix);
    program_free(&self->suffix);
    program_free(&self->infix);
    program_free(&self->url_tld);
    table_free(&self->specials);
    table_free(&self->merges);
    table_free(&self->merge_starts);
    PyMem_Free(self->lengths); PyMem_Free(self->seg_start); PyMem_Free(self->seg_count);
    PyMem_Free(self->text); PyMem_Free(self->ends); PyMem_Free(self->suffix_ends); PyMem_Free(self->merged);
    PyMem_Free(self->chosen); PyMem_Free(self->taken); PyMem_Free(self->key); PyMem_Free(self->matches);
    Py_XDECREF(self->url_match);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject SplitterType;

/* ---- the word tables: WordTokenizer's vocabulary and chunk table ------------------------------ */

typedef struct {
    int64_t first;              /* where the chunk's token ids start in chunk_tokens; -1: only counted */
    int32_t words;              /* its number of words (tokens) */
} ChunkRecord;

typedef struct {
    PyObject_HEAD
    Splitter *splitter;
    PyObject *strings;          /* list: token id -> token str */
    Table vocab;                /* token code points -> token id */
    Table chunks;               /* chunk code points -> chunk index (dense, in insertion order) */
    ChunkRecord *chunk_records; /* by chunk index */
    Py_ssize_t chunk_capacity;
    int32_t *chunk_tokens;      /* token ids of the interned chunks, flat */
    Py_ssize_t n_chunk_tokens, chunk_tokens_capacity;
    Py_UCS4 *key;               /* code points of the text at hand, at their positions (next_chunk) */
    Py_ssize_t key_capacity;
    long long splits;           /* chunks split so far: every chunk-table miss, and a counted chunk interned */
} WordTables;

static int grow_buffer(void **buffer, Py_ssize_t *capacity, Py_ssize_t needed, size_t item) {
    if (needed <= *capacity) return 0;
    Py_ssize_t grown = *capacity ? *capacity : 256;
    while (grown < needed) grown *= 2;
    void *moved = PyMem_Realloc(*buffer, item * (size_t)grown);
    if (!moved) { PyErr_NoMemory(); return -1; }
    *buffer = moved;
    *capacity = grown;
    return 0;
}

static inline int is_letter(Py_UCS4 c) {
    return c < 128 ? (unsigned)((c | 0x20) - 'a') <= 'z' - 'a' : Py_UNICODE_ISALPHA(c);
}

/* the next whitespace-separated chunk of data[*pos:n] (str.split()'s whitespace): its start, or
 * -1 at the end; *pos becomes its end; *key: the chunk as a Key (key_of), its code points written
 * to buffer at their positions in data (buffer has room for n); *letters: it is letters only.
 * Generated per string kind so the character loop reads the string's own code units. */
#define DEFINE_NEXT_CHUNK(NAME, UNIT)                                                              \
    static Py_ssize_t NAME(const UNIT *data, Py_ssize_t n, Py_ssize_t *pos, int *letters,         \
                           Py_UCS4 *buffer, Key *key) {                                            \
        Py_ssize_t i = *pos;                                                                       \
        while (i < n && Py_UNICODE_ISSPACE(data[i])) i++;                                          \
        if (i >= n) return -1;                                                                     \
        Py_ssize_t start = i;                                                                      \
        int all_letters = 1;                                                                       \
        uint64_t hash = FNV_OFFSET, packed = 0;                                                    \
        Py_UCS4 widest = 0;                                                                        \
        for (; i < n && !Py_UNICODE_ISSPACE(data[i]); i++) {                                       \
            Py_UCS4 c = data[i];                                                                   \
            buffer[i] = c;                                                                         \
            hash = (hash ^ c) * FNV_PRIME;                                                         \
            if (i - start < PACKED_MAX) {                                                          \
                packed |= (uint64_t)(c & 0xFF) << (8 * (i - start));                               \
                widest |= c;                                                                       \
            }                                                                                      \
            if (all_letters && !is_letter(c)) all_letters = 0;                                     \
        }                                                                                          \
        *pos = i;                                                                                  \
        *letters = all_letters;                                                                    \
        *key = (Key){buffer + start, i - start, hash, packed, i - start <= PACKED_MAX && widest <= 0xFF}; \
        return start;                                                                              \
    }
DEFINE_NEXT_CHUNK(next_chunk_ucs1, Py_UCS1)
DEFINE_NEXT_CHUNK(next_chunk_ucs2, Py_UCS2)
DEFINE_NEXT_CHUNK(next_chunk_ucs4, Py_UCS4)

/* next_chunk_* for a str of that kind */
static inline Py_ssize_t next_chunk(int kind, const void *data, Py_ssize_t n, Py_ssize_t *pos, int *letters,
                                    Py_UCS4 *buffer, Key *key) {
    return kind == PyUnicode_1BYTE_KIND ? next_chunk_ucs1(data, n, pos, letters, buffer, key)
         : kind == PyUnicode_2BYTE_KIND ? next_chunk_ucs2(data, n, pos, letters, buffer, key)
         : next_chunk_ucs4(data, n, pos, letters, buffer, key);
}

/* the id of token s[:n], interned when new: its str is string when given, else source[at:at + n];
 * -1 on error */
static int32_t intern_code_points(WordTables *self, const Py_UCS4 *s, Py_ssize_t n, PyObject *string,
                                  PyObject *source, Py_ssize_t at) {
    Key key = key_of(s, n);
    int32_t known = table_find(&self->vocab, &key)->value;
    if (known >= 0) return known;
    Py_ssize_t id = PyList_GET_SIZE(self->strings);
    if (id >= INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "vocabulary full");
        return -1;
    }
    PyObject *token = string ? Py_NewRef(string) : PyUnicode_Substring(source, at, at + n);
    if (!token) return -1;
    int failed = PyList_Append(self->strings, token);
    Py_DECREF(token);
    if (failed) return -1;
    if (table_put_key(&self->vocab, &key, (int32_t)id) < 0) {
        PyList_SetSlice(self->strings, id, id + 1, NULL);  /* the list stays the table's mirror */
        return -1;
    }
    return (int32_t)id;
}

/* split source[start:end]; with intern, its tokens are interned and their ids appended to
 * chunk_tokens from *first on (else *first is -1). Returns the token count, -1 on error. */
static Py_ssize_t split_into_tables(WordTables *self, PyObject *source, Py_ssize_t start, Py_ssize_t end,
                                    int intern, int64_t *first) {
    Splitter *splitter = self->splitter;
    Py_ssize_t count = split_chunk(splitter, source, start, end);
    if (count < 0) return -1;
    self->splits++;
    *first = -1;
    if (!intern) return count;
    if (grow_buffer((void **)&self->chunk_tokens, &self->chunk_tokens_capacity, self->n_chunk_tokens + count,
                    sizeof(int32_t)) < 0)
        return -1;
    for (Py_ssize_t i = 0, from = 0; i < count; from = splitter->ends[i++]) {
        int32_t id = intern_code_points(self, splitter->text + from, splitter->ends[i] - from, NULL, source,
                                        start + from);
        if (id < 0) return -1;
        self->chunk_tokens[self->n_chunk_tokens + i] = id;
    }
    *first = self->n_chunk_tokens;
    self->n_chunk_tokens += count;
    return count;
}

/* the index of the chunk source[start:start + key->n], added when new; with intern, its tokens are
 * interned too (a chunk only counted so far is split again). -1 on error. */
static Py_ssize_t chunk_index(WordTables *self, PyObject *source, Py_ssize_t start, const Key *key, int intern) {
    int32_t index = table_find(&self->chunks, key)->value;
    if (index >= 0 && (!intern || self->chunk_records[index].first >= 0)) return index;
    int64_t first;
    Py_ssize_t count = split_into_tables(self, source, start, start + key->n, intern, &first);
    if (count < 0) return -1;
    if (index >= 0) {
        self->chunk_records[index].first = first;
        return index;
    }
    Py_ssize_t added = self->chunks.size;
    if (added >= INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "chunk table full");
        return -1;
    }
    if (grow_buffer((void **)&self->chunk_records, &self->chunk_capacity, added + 1, sizeof(ChunkRecord)) < 0)
        return -1;
    if (table_put_key(&self->chunks, key, (int32_t)added) < 0) return -1;
    self->chunk_records[added] = (ChunkRecord){first, (int32_t)count};
    return added;
}

/* room in self->key for a text of n characters */
static int reserve_key(WordTables *self, Py_ssize_t n) {
    return grow_buffer((void **)&self->key, &self->key_capacity, n + 1, sizeof(Py_UCS4));
}

/* a chunk of the text at hand in tables_tokenize */
typedef struct {
    Key key;
    Py_ssize_t start;
    int32_t index;          /* its chunk index when known before the text's new chunks are added, else -1 */
} TextChunk;

/* WordTokenizer.tokenize: the token ids of each text's whitespace-separated chunks (str.split()),
 * concatenated, and each text's offset into them (len(texts) + 1), as bytearrays of int64 (numpy
 * views of them are writable). A known chunk costs a hash probe; a new one is split and its
 * tokens interned.
 *
 * A text is read in three passes so that the cache misses of its chunks overlap instead of
 * coming one after another (most of a known chunk's cost is a miss on its table slot, then on its
 * record): scan every chunk and prefetch its slot; find the known ones and prefetch their records;
 * then, in order, add the new ones and emit every chunk's tokens. */
static PyObject *tables_tokenize(WordTables *self, PyObject *texts) {
    PyObject *ids = NULL, *offsets = NULL;
    PyObject *sequence = PySequence_Fast(texts, "texts must be a sequence of str");
    if (!sequence) return NULL;
    Py_ssize_t n_texts = PySequence_Fast_GET_SIZE(sequence), used = 0, capacity = 0, chunks_capacity = 0;
    int64_t *out = NULL;
    TextChunk *chunks = NULL;
    offsets = PyByteArray_FromStringAndSize(NULL, (n_texts + 1) * (Py_ssize_t)sizeof(int64_t));
    if (!offsets) goto done;
    int64_t *offset = (int64_t *)PyByteArray_AS_STRING(offsets);
    offset[0] = 0;
    for (Py_ssize_t i = 0; i < n_texts; i++) {
        PyObject *text = PySequence_Fast_GET_ITEM(sequence, i);
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "texts must be str, not %.100s", Py_TYPE(text)->tp_name);
            goto done;
        }
        Py_ssize_t n = PyUnicode_GET_LENGTH(text), pos = 0, start, n_chunks = 0;
        int kind = PyUnicode_KIND(text), letters;
        const void *data = PyUnicode_DATA(text);
        Key key;
        if (reserve_key(self, n) < 0) goto done;
        while ((start = next_chunk(kind, data, n, &pos, &letters, self->key, &key)) >= 0) {
            if (grow_buffer((void **)&chunks, &chunks_capacity, n_chunks + 1, sizeof(TextChunk)) < 0) goto done;
            chunks[n_chunks++] = (TextChunk){key, start, -1};
            __builtin_prefetch(&self->chunks.slots[first_slot(&self->chunks, key.hash)]);
        }
        for (Py_ssize_t c = 0; c < n_chunks; c++) {
            int32_t index = chunks[c].index = table_find(&self->chunks, &chunks[c].key)->value;
            if (index >= 0) __builtin_prefetch(&self->chunk_records[index]);
        }
        for (Py_ssize_t c = 0; c < n_chunks; c++) {
            Py_ssize_t index = chunks[c].index;
            if (index < 0 || self->chunk_records[index].first < 0) {
                index = chunk_index(self, text, chunks[c].start, &chunks[c].key, 1);
                if (index < 0) goto done;
            }
            const ChunkRecord *chunk = &self->chunk_records[index];
            if (grow_buffer((void **)&out, &capacity, used + chunk->words, sizeof(int64_t)) < 0) goto done;
            const int32_t *tokens = self->chunk_tokens + chunk->first;
            for (int32_t j = 0; j < chunk->words; j++) out[used++] = tokens[j];
        }
        offset[i + 1] = used;
    }
    ids = PyByteArray_FromStringAndSize((const char *)out, used * (Py_ssize_t)sizeof(int64_t));
done:
    PyMem_Free(out);
    PyMem_Free(chunks);
    Py_DECREF(sequence);
    if (!ids) { Py_XDECREF(offsets); return NULL; }
    return Py_BuildValue("(NN)", ids, offsets);
}

/* WordTokenizer.token_counts: each text's number of words, a bytearray of int64. A chunk of letters only that
 * is no special case is one word; the others' counts come from the chunk table, a new chunk split
 * and added without interning its tokens (the count is all this path keeps). */
static PyObject *tables_count_words(WordTables *self, PyObject *texts) {
    PyObject *sequence = PySequence_Fast(texts, "texts must be a sequence of str");
    if (!sequence) return NULL;
    Py_ssize_t n_texts = PySequence_Fast_GET_SIZE(sequence);
    PyObject *counts = PyByteArray_FromStringAndSize(NULL, n_texts * (Py_ssize_t)sizeof(int64_t));
    if (!counts) goto error;
    int64_t *count = (int64_t *)PyByteArray_AS_STRING(counts);
    for (Py_ssize_t i = 0; i < n_texts; i++) {
        PyObject *text = PySequence_Fast_GET_ITEM(sequence, i);
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "texts must be str, not %.100s", Py_TYPE(text)->tp_name);
            goto error;
        }
        Py_ssize_t n = PyUnicode_GET_LENGTH(text), pos = 0, start, words = 0;
        int kind = PyUnicode_KIND(text), letters;
        const void *data = PyUnicode_DATA(text);
        Key key;
        if (reserve_key(self, n) < 0) goto error;
        while ((start = next_chunk(kind, data, n, &pos, &letters, self->key, &key)) >= 0) {
            if (letters && (!maybe_special(self->splitter, key.n, key.s[0], key.s[key.n - 1]) ||
                            table_find(&self->splitter->specials, &key)->value < 0)) {
                words++;  /* one word unless a special case ("cannot") */
                continue;
            }
            Py_ssize_t index = chunk_index(self, text, start, &key, 0);
            if (index < 0) goto error;
            words += self->chunk_records[index].words;
        }
        count[i] = words;
    }
    Py_DECREF(sequence);
    return counts;
error:
    Py_DECREF(sequence);
    Py_XDECREF(counts);
    return NULL;
}

static PyObject *tables_intern(WordTables *self, PyObject *token) {
    if (!PyUnicode_Check(token)) {
        PyErr_SetString(PyExc_TypeError, "intern() takes a str");
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(token);
    if (reserve_key(self, n) < 0 || !PyUnicode_AsUCS4(token, self->key, self->key_capacity, 0)) return NULL;
    int32_t id = intern_code_points(self, self->key, n, token, NULL, 0);
    return id < 0 ? NULL : PyLong_FromLong(id);
}

static PyObject *tables_clear_chunks(WordTables *self, PyObject *Py_UNUSED(ignored)) {
    table_clear(&self->chunks);
    self->n_chunk_tokens = 0;
    Py_RETURN_NONE;
}

static PyObject *tables_get_chunks(WordTables *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(self->chunks.size);
}

static int tables_init(WordTables *self, PyObject *args, PyObject *kwargs) {
    PyObject *splitter;
    static char *keywords[] = {"splitter", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:WordTables", keywords, &SplitterType, &splitter)) return -1;
    if (self->splitter) {
        PyErr_SetString(PyExc_RuntimeError, "WordTables is already initialised");
        return -1;
    }
    self->splitter = (Splitter *)Py_NewRef(splitter);
    if (!(self->strings = PyList_New(0)) || table_init(&self->vocab, 4096) < 0 || table_init(&self->chunks, 4096) < 0)
        return -1;
    return 0;
}

static void tables_dealloc(WordTables *self) {
    Py_XDECREF(self->splitter);
    Py_XDECREF(self->strings);
    table_free(&self->vocab);
    table_free(&self->chunks);
    PyMem_Free(self->chunk_records);
    PyMem_Free(self->chunk_tokens);
    PyMem_Free(self->key);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- Vocabulary.sync's token features ------------------------------------------------------------ */

enum { FEATURE_IS_WORD = 1, FEATURE_HAS_ALPHA = 2, FEATURE_ENDS_SENTENCE = 4, FEATURE_OPENS_SENTENCE = 8 };

typedef struct { const uint32_t *code_points; Py_ssize_t n; } CodePoints;

static int code_points_view(PyObject *obj, CodePoints *out, const char *what) {
    if (!PyBytes_Check(obj) || PyBytes_GET_SIZE(obj) % sizeof(uint32_t)) {
        PyErr_Format(PyExc_ValueError, "%s must be bytes of sorted uint32 code points", what);
        return -1;
    }
    out->code_points = (const uint32_t *)PyBytes_AS_STRING(obj);
    out->n = PyBytes_GET_SIZE(obj) / (Py_ssize_t)sizeof(uint32_t);
    return 0;
}

static int contains(const CodePoints *set, Py_UCS4 c) {
    Py_ssize_t low = 0, high = set->n;
    while (low < high) {
        Py_ssize_t mid = (low + high) / 2;
        if (set->code_points[mid] < c) low = mid + 1;
        else high = mid;
    }
    return low < set->n && set->code_points[low] == c;
}

static PyObject *token_features(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *strings, *non_word_obj, *enders_obj, *is_punct;
    Py_ssize_t start;
    CodePoints non_word, enders;
    if (!PyArg_ParseTuple(args, "O!nSSO:token_features", &PyList_Type, &strings, &start, &non_word_obj,
                          &enders_obj, &is_punct) ||
        code_points_view(non_word_obj, &non_word, "non_word") < 0 ||
        code_points_view(enders_obj, &enders, "enders") < 0)
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(strings);
    Py_ssize_t n = start < 0 || start > total ? -1 : total - start;
    if (n < 0) {
        PyErr_SetString(PyExc_IndexError, "start out of range");
        return NULL;
    }
    PyObject *lengths = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof(int64_t) * n);
    PyObject *flags = PyBytes_FromStringAndSize(NULL, n);
    if (!lengths || !flags) goto error;
    int64_t *length = (int64_t *)PyBytes_AS_STRING(lengths);
    unsigned char *flag = (unsigned char *)PyBytes_AS_STRING(flags);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *token = PyList_GET_ITEM(strings, start + i);
        if (!PyUnicode_Check(token)) {
            PyErr_SetString(PyExc_TypeError, "vocabulary strings must be str");
            goto error;
        }
        Py_ssize_t len = PyUnicode_GET_LENGTH(token);
        int kind = PyUnicode_KIND(token);
        const void *data = PyUnicode_DATA(token);
        int is_word = 0, has_alpha = 0, has_alnum = 0;
        for (Py_ssize_t j = 0; j < len; j++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, j);
            if (!is_word && !contains(&non_word, c)) is_word = 1;
            if (!has_alpha && Py_UNICODE_ISALPHA(c)) has_alpha = 1;
            if (!has_alnum && Py_UNICODE_ISALNUM(c)) has_alnum = 1;
        }
        /* the sentencizer's enders are single characters (spaCy's default_punct_chars in spacy_tables.py) */
        int ends = len == 1 && contains(&enders, PyUnicode_READ(kind, data, 0));
        int all_punctuation = 0;  /* letters and digits are not in a punctuation category */
        if (!ends && !has_alnum) {
            PyObject *answer = PyObject_CallOneArg(is_punct, token);
            if (!answer || (all_punctuation = PyObject_IsTrue(answer)) < 0) {
                Py_XDECREF(answer);
                goto error;
            }
            Py_DECREF(answer);
        }
        length[i] = len;
        flag[i] = (unsigned char)((is_word ? FEATURE_IS_WORD : 0) | (has_alpha ? FEATURE_HAS_ALPHA : 0) |
                                  (ends ? FEATURE_ENDS_SENTENCE : 0) |
                                  (!ends && !all_punctuation ? FEATURE_OPENS_SENTENCE : 0));
    }
    PyObject *result = PyTuple_Pack(2, lengths, flags);
    Py_DECREF(lengths);
    Py_DECREF(flags);
    return result;
error:
    Py_XDECREF(lengths);
    Py_XDECREF(flags);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"token_features", token_features, METH_VARARGS,
     "token_features(strings, start, non_word, enders, is_punct) -> (lengths int64 bytes, flags bytes)"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef splitter_methods[] = {
    {"split", (PyCFunction)splitter_split, METH_O, "split(chunk) -> tuple of tokens"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SplitterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "selectd.text._chunksplit.Splitter",
    .tp_basicsize = sizeof(Splitter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "spaCy's English tokenizer on whitespace-free chunks",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)splitter_init,
    .tp_dealloc = (destructor)splitter_dealloc,
    .tp_methods = splitter_methods,
};

static PyMethodDef tables_methods[] = {
    {"tokenize", (PyCFunction)tables_tokenize, METH_O,
     "tokenize(texts) -> (token ids, offsets: len(texts) + 1), bytearrays of int64"},
    {"count_words", (PyCFunction)tables_count_words, METH_O,
     "count_words(texts) -> words of each text, bytearray of int64"},
    {"intern", (PyCFunction)tables_intern, METH_O, "intern(token) -> token id"},
    {"clear_chunks", (PyCFunction)tables_clear_chunks, METH_NOARGS, "empty the chunk table (the vocabulary stays)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef tables_members[] = {
    {"strings", T_OBJECT_EX, offsetof(WordTables, strings), READONLY, "token strings by id (a list: do not modify)"},
    {"splits", T_LONGLONG, offsetof(WordTables, splits), READONLY, "chunks split so far"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef tables_getset[] = {
    {"chunks", (getter)tables_get_chunks, NULL, "chunks in the chunk table", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WordTablesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "selectd.text._chunksplit.WordTables",
    .tp_basicsize = sizeof(WordTables),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "WordTokenizer's vocabulary and chunk table over a Splitter",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)tables_init,
    .tp_dealloc = (destructor)tables_dealloc,
    .tp_methods = tables_methods,
    .tp_members = tables_members,
    .tp_getset = tables_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chunksplit", "spaCy's English tokenizer in C", -1,
                                     module_methods};

PyMODINIT_FUNC PyInit__chunksplit(void) {
    if (PyType_Ready(&SplitterType) < 0 || PyType_Ready(&WordTablesType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Splitter", (PyObject *)&SplitterType) < 0 ||
        PyModule_AddObjectRef(m, "WordTables", (PyObject *)&WordTablesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
