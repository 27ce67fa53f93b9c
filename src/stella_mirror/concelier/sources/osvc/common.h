/* Shared pieces: limits, the helpers' memo, the output buffer and JSON string escaping, strings.
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

#define MAX_ITEMS 512 /* longer lists are left to the exact reader (keeps the small sorts below cheap) */

static PyObject *cvss_fn, *purl_fn, *severity_fn, *sha256_fn;

#define MEMO_MAX (1 << 14)

/* The helpers' answers by their arguments' UTF-8 (length-prefixed, so no two argument lists share a
 * key): corpora repeat a handful of CVSS vectors and packages many times over, and the helpers are
 * pure. Looking the bytes up here needs no Python str, tuple or dict lookup per call; on a miss the
 * caller makes the arguments and calls the helper once. Open addressing, cleared when full. */
typedef struct {
    uint64_t h;
    char *key; /* NULL: empty slot */
    Py_ssize_t kn;
    PyObject *val, *aux; /* the answer, and what the caller derived from it once (or NULL) */
} MemoSlot;

typedef struct {
    MemoSlot *slots;
    size_t cap, n;
} Memo;

static Memo purl_memo, cvss_memo;

static uint64_t memo_hash(const char *s, Py_ssize_t n) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

static void memo_clear(Memo *m) {
    for (size_t i = 0; i < m->cap; i++) {
        MemoSlot *e = &m->slots[i];
        if (e->key) {
            PyMem_Free(e->key);
            Py_XDECREF(e->val);
            Py_XDECREF(e->aux);
        }
    }
    if (m->cap) memset(m->slots, 0, sizeof(MemoSlot) * m->cap);
    m->n = 0;
}

/* The slot for key: its entry, or the empty slot where it would go (NULL when there is no table). */
static MemoSlot *memo_slot(Memo *m, const char *key, Py_ssize_t kn, uint64_t h) {
    if (!m->cap) return NULL;
    for (size_t i = (size_t)h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        MemoSlot *e = &m->slots[i];
        if (!e->key || (e->h == h && e->kn == kn && memcmp(e->key, key, (size_t)kn) == 0)) return e;
    }
}

/* The remembered entry for key, or NULL. */
static MemoSlot *memo_get(Memo *m, const char *key, Py_ssize_t kn) {
    MemoSlot *e = memo_slot(m, key, kn, memo_hash(key, kn));
    return e && e->key ? e : NULL;
}

/* Remember val (and aux, may be NULL) for key, taking both references; the entry, or NULL with
 * MemoryError (the references are released). */
static MemoSlot *memo_put(Memo *m, const char *key, Py_ssize_t kn, PyObject *val, PyObject *aux) {
    if (m->n >= MEMO_MAX) memo_clear(m);
    if (!m->cap) {
        m->slots = PyMem_Calloc(2 * MEMO_MAX, sizeof(MemoSlot)); /* load factor at most 1/2 */
        if (!m->slots) goto fail;
        m->cap = 2 * MEMO_MAX;
    }
    uint64_t h = memo_hash(key, kn);
    MemoSlot *e = memo_slot(m, key, kn, h);
    char *copy = PyMem_Malloc((size_t)kn + 1);
    if (!copy) goto fail;
    memcpy(copy, key, (size_t)kn);
    if (e->key) { /* cannot happen (callers look up first): replace */
        PyMem_Free(e->key);
        Py_XDECREF(e->val);
        Py_XDECREF(e->aux);
        m->n--;
    }
    *e = (MemoSlot){h, copy, kn, val, aux};
    m->n++;
    return e;
fail:
    Py_XDECREF(val);
    Py_XDECREF(aux);
    PyErr_NoMemory();
    return NULL;
}

/* ---- output buffer ------------------------------------------------------------------------------ */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t extra) {
    Py_ssize_t need = b->len + extra;
    if (need <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n) < 0) return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT(b, lit) buf_put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* Append one memo key part: its length, then its bytes (s == NULL: a part that is absent). */
static int key_part(Buf *k, const char *s, Py_ssize_t n) {
    int64_t len = s ? (int64_t)n : -1;
    return buf_put(k, (const char *)&len, 8) || (s && buf_put(k, s, n));
}

static const char HEX[] = "0123456789abcdef";

/* Bytes that orjson escapes: ", \ and the control characters. */
static unsigned char NEEDS_ESCAPE[256];

static void init_escape_table(void) {
    for (int c = 0; c < 0x20; c++) NEEDS_ESCAPE[c] = 1;
    NEEDS_ESCAPE['"'] = NEEDS_ESCAPE['\\'] = 1;
}

/* A JSON string as orjson writes it: ", \ and control characters escaped, everything else raw UTF-8. */
static int put_str(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n + 2) < 0) return -1;
    b->p[b->len++] = '"';
    Py_ssize_t run = 0; /* start of the bytes not yet copied */
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Eight bytes at a time while none needs escaping (the usual case: long plain text). */
        while (i + 8 <= n) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
            uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
            uint64_t hit = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs);
            if (hit & high) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i];
        if (!NEEDS_ESCAPE[c]) continue;
        if (buf_grow(b, (i - run) + 6 + (n - i) + 1) < 0) return -1;
        memcpy(b->p + b->len, s + run, (size_t)(i - run));
        b->len += i - run;
        run = i + 1;
        char *o = b->p + b->len;
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\t': *o++ = 't'; break;
        case '\n': *o++ = 'n'; break;
        case '\f': *o++ = 'f'; break;
        case '\r': *o++ = 'r'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = HEX[c >> 4];
            *o++ = HEX[c & 15];
        }
        b->len = o - b->p;
    }
    if (buf_grow(b, (n - run) + 1) < 0) return -1;
    memcpy(b->p + b->len, s + run, (size_t)(n - run));
    b->len += n - run;
    b->p[b->len++] = '"';
    return 0;
}

/* ---- strings ------------------------------------------------------------------------------------ */

typedef struct {
    PyObject *obj; /* borrowed, or owned when noted */
    const char *s;
    Py_ssize_t n;
    int raw; /* 1: known to hold nothing that JSON escapes (a string read without escapes), so it is
              * written as it is; 0: scanned when written */
} Str;

/* The UTF-8 of an exact str; -1 with no exception set when it has none (lone surrogates). */
static int utf8(PyObject *o, Str *out) {
    out->obj = o;
    out->raw = 0;
    out->s = PyUnicode_AsUTF8AndSize(o, &out->n);
    if (!out->s) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

static int str_cmp(const Str *a, const Str *b) {
    Py_ssize_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, (size_t)n);
    if (c) return c;
    return (a->n > b->n) - (a->n < b->n);
}

static int put_pystr(Buf *b, const Str *s) {
    if (!s->raw) return put_str(b, s->s, s->n);
    if (buf_grow(b, s->n + 2) < 0) return -1; /* nothing to escape: copied as it is */
    b->p[b->len] = '"';
    memcpy(b->p + b->len + 1, s->s, (size_t)s->n);
    b->p[b->len + 1 + s->n] = '"';
    b->len += s->n + 2;
    return 0;
}

static int put_opt(Buf *b, const Str *s) { return s->s ? put_pystr(b, s) : PUT(b, "null"); }

/* ^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$ over ASCII digits (stricter than re's \d: declines more). */
static int canonical_time(const Str *t) {
    static const char pat[] = "dddd-dd-ddTdd:dd:dd";
    if (t->n != 20 && t->n != 27) return 0;
    for (int i = 0; i < 19; i++) {
        char c = t->s[i];
        if (pat[i] == 'd' ? (c < '0' || c > '9') : c != pat[i]) return 0;
    }
    if (t->n == 27) {
        if (t->s[19] != '.') return 0;
        for (int i = 20; i < 26; i++)
            if (t->s[i] < '0' || t->s[i] > '9') return 0;
    }
    return t->s[t->n - 1] == 'Z';
}
