/* Shared pieces: limits, the helpers' memo, the output buffer and JSON string escaping, strings.
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

#define MAX_ITEMS 512 /* longer lists are left to the exact reader (keeps the small sorts below cheap) */

static PyObject *cvss_fn, *purl_fn, *severity_fn, *sha256_fn;
static PyObject *ONE; /* the int 1 */
static PyObject *purl_memo, *cvss_memo; /* answers of purl_fn / cvss_fn by their arguments */

#define MEMO_MAX (1 << 14)

/* fn(*args), remembered in memo (a dict, cleared when full): corpora repeat a handful of CVSS vectors and
 * packages many times over, and the helpers are pure. A new reference, or NULL with an exception. */
static PyObject *memo_call(PyObject *memo, PyObject *fn, PyObject *const *args, Py_ssize_t n) {
    PyObject *key = n == 2 ? PyTuple_Pack(2, args[0], args[1]) : PyTuple_Pack(3, args[0], args[1], args[2]);
    if (!key) return NULL;
    PyObject *res = PyDict_GetItemWithError(memo, key);
    if (res) {
        Py_INCREF(res);
        Py_DECREF(key);
        return res;
    }
    if (PyErr_Occurred() || !(res = PyObject_Vectorcall(fn, args, (size_t)n, NULL))) {
        Py_DECREF(key);
        return NULL;
    }
    if (PyDict_GET_SIZE(memo) >= MEMO_MAX) PyDict_Clear(memo);
    if (PyDict_SetItem(memo, key, res) < 0) {
        Py_DECREF(key);
        Py_DECREF(res);
        return NULL;
    }
    Py_DECREF(key);
    return res;
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
} Str;

/* The UTF-8 of an exact str; -1 with no exception set when it has none (lone surrogates). */
static int utf8(PyObject *o, Str *out) {
    out->obj = o;
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

static int put_pystr(Buf *b, const Str *s) { return put_str(b, s->s, s->n); }

static int put_opt(Buf *b, const Str *s) { return s->s ? put_str(b, s->s, s->n) : PUT(b, "null"); }

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
