/*
 * The OSV fast path in C: an orjson-decoded OSV document (dict) → the canonical bytes of its
 * single-record advisory, or None (decline: the caller runs the exact reader).
 *
 * This is osv_fast.python_entry without the Python object churn: instead of building output structs
 * and encoding them, it checks the decoded tree's shape and writes the canonical JSON straight into
 * one buffer; stage() goes on to append the staged entry where staging.Stager keeps its chunk. It
 * only ever *accepts*: anything that is not exactly the common shape python_entry accepts (a type it does not allow, an unknown field, a timestamp not in canonical form, an empty
 * string where null and "" would differ, a list longer than MAX_ITEMS, …) returns None, and the
 * exact reader maps the document or names the bad field. Differential tests hold it to the exact
 * reader and to python_entry on the shared corpus, constructed variants and mutated documents, and
 * stage() to the Python staging path (tests/unit/concelier/test_osv_fast.py, test_staging_compiled.py).
 *
 * CVSS scoring, purls and non-ASCII severity words stay in Python, passed in once through configure()
 * (with hashlib.sha256) and memoised here; the lowest CVE, ASCII severity words, ratings and zlib's
 * CRC-32 are re-stated here (small, and needed for every document).
 *
 * Strings are compared as UTF-8 bytes: UTF-8 preserves code point order, so memcmp sorts exactly as
 * Python sorts str. Output strings are escaped exactly as orjson and msgspec escape them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- a strict JSON reader ----------------------------------------------------------------------- */
/*
 * The document is parsed into a small tree in C rather than into Python objects. It reads a strict
 * subset of what orjson reads, to the same values: UTF-8 checked sequence by sequence (no overlong
 * forms, no surrogates, nothing above U+10FFFF), escapes decoded (a lone surrogate declines), numbers
 * without an exponent and of at most 300 digits (finite whatever orjson makes of them), no key twice
 * in one object, at most J_DEPTH levels. Anything else declines, and the exact reader decides.
 */
enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct JVal JVal;
typedef struct JMem JMem;
struct JVal {
    int t;
    Py_ssize_t n; /* bytes of a string, items of an array, members of an object */
    union {
        const char *s;
        JVal *items;
        JMem *mem;
    } u;
};
struct JMem {
    const char *k;
    Py_ssize_t kn;
    JVal v;
};

#define J_DEPTH 64
#define J_MEMBERS 256 /* larger objects decline (keeps the repeated-key check small) */

typedef struct JChunk {
    struct JChunk *next;
    size_t used, cap;
    char data[];
} JChunk;

typedef struct {
    const unsigned char *p, *end;
    JChunk *chunks; /* nodes and decoded strings */
    JVal *vals;     /* items of the arrays being read */
    Py_ssize_t nvals, capvals;
    JMem *mems; /* members of the objects being read */
    Py_ssize_t nmems, capmems;
    int depth;
} JP;

static void *jp_alloc(JP *jp, size_t size) {
    size = (size + 15) & ~(size_t)15;
    JChunk *c = jp->chunks;
    if (!c || c->used + size > c->cap) {
        size_t cap = size > 16384 ? size : 16384;
        c = PyMem_Malloc(sizeof(JChunk) + cap);
        if (!c) return NULL;
        c->next = jp->chunks;
        c->used = 0;
        c->cap = cap;
        jp->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

static void jp_free(JP *jp) {
    for (JChunk *c = jp->chunks, *next; c; c = next) {
        next = c->next;
        PyMem_Free(c);
    }
    PyMem_Free(jp->vals);
    PyMem_Free(jp->mems);
    memset(jp, 0, sizeof(*jp));
}

static void jp_ws(JP *jp) {
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\n' || *jp->p == '\r' || *jp->p == '\t')) jp->p++;
}

/* The length of the UTF-8 sequence at p (first byte >= 0x80), or 0 when it is not well formed. */
static int utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF) return end - p >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F)) return 0; /* overlong, surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F)) return 0; /* overlong, > U+10FFFF */
        return 4;
    }
    return 0;
}

static int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d == 16u) return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

/* A string at jp->p (its opening quote): 0 with *s, *n (into the input when nothing is escaped), -1. */
static int jp_string(JP *jp, const char **s, Py_ssize_t *n) {
    const unsigned char *start = jp->p + 1, *p = start, *end = jp->end;
    int escaped = 0;
    for (;;) {
        while (p + 8 <= end) { /* eight plain ASCII bytes at a time */
            uint64_t x;
            memcpy(&x, p, 8);
            const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
            uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
            if ((((x - ones * 0x20) | x | (q - ones) | (bs - ones)) & high) == 0) { /* no <0x20, >=0x80, ", \ */
                p += 8;
                continue;
            }
            break;
        }
        if (p >= end) return -1;
        unsigned char c = *p;
        if (c == '"') break;
        if (c == '\\') {
            if (end - p < 2) return -1;
            escaped = 1;
            p += p[1] == 'u' ? 6 : 2; /* checked when decoded below */
            if (p > end) return -1;
            continue;
        }
        if (c < 0x20) return -1;
        if (c < 0x80) {
            p++;
            continue;
        }
        int k = utf8_seq(p, end);
        if (!k) return -1;
        p += k;
    }
    jp->p = p + 1;
    if (!escaped) {
        *s = (const char *)start;
        *n = p - start;
        return 0;
    }
    char *out = jp_alloc(jp, (size_t)(p - start)), *o = out; /* never longer decoded */
    if (!out) return -1;
    for (const unsigned char *q = start; q < p;) {
        if (*q != '\\') {
            *o++ = (char)*q++;
            continue;
        }
        unsigned char e = q[1];
        q += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p - q < 4 || !hex4(q, &cp)) return -1;
            q += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return -1; /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                q += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            return -1;
        }
    }
    *s = out;
    *n = o - out;
    return 0;
}

static int jp_number(JP *jp) {
    const unsigned char *p = jp->p, *end = jp->end;
    Py_ssize_t digits = 0;
    if (p < end && *p == '-') p++;
    if (p >= end) return -1;
    if (*p == '0') {
        p++;
        digits = 1;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++, digits++;
    } else {
        return -1;
    }
    if (p < end && *p == '.') {
        p++;
        Py_ssize_t fraction = 0;
        while (p < end && *p >= '0' && *p <= '9') p++, fraction++;
        if (!fraction) return -1;
        digits += fraction;
    }
    if ((p < end && (*p == 'e' || *p == 'E')) || digits > 300) return -1;
    jp->p = p;
    return 0;
}

static int jp_value(JP *jp, JVal *v);

static int jp_array(JP *jp, JVal *v) {
    if (++jp->depth > J_DEPTH) return -1;
    jp->p++;
    Py_ssize_t base = jp->nvals;
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == ']') {
        jp->p++;
    } else {
        for (;;) {
            JVal item;
            if (jp_value(jp, &item) < 0) return -1;
            if (jp->nvals == jp->capvals) {
                Py_ssize_t cap = jp->capvals ? jp->capvals * 2 : 64;
                JVal *grown = PyMem_Realloc(jp->vals, sizeof(JVal) * (size_t)cap);
                if (!grown) return -1;
                jp->vals = grown;
                jp->capvals = cap;
            }
            jp->vals[jp->nvals++] = item;
            jp_ws(jp);
            if (jp->p >= jp->end) return -1;
            if (*jp->p == ',') {
                jp->p++;
                continue;
            }
            if (*jp->p != ']') return -1;
            jp->p++;
            break;
        }
    }
    v->t = J_ARR;
    v->n = jp->nvals - base;
    v->u.items = NULL;
    if (v->n) {
        if (!(v->u.items = jp_alloc(jp, sizeof(JVal) * (size_t)v->n))) return -1;
        memcpy(v->u.items, jp->vals + base, sizeof(JVal) * (size_t)v->n);
    }
    jp->nvals = base;
    jp->depth--;
    return 0;
}

static int jp_object(JP *jp, JVal *v) {
    if (++jp->depth > J_DEPTH) return -1;
    jp->p++;
    Py_ssize_t base = jp->nmems;
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == '}') {
        jp->p++;
    } else {
        for (;;) {
            JMem m;
            jp_ws(jp);
            if (jp->p >= jp->end || *jp->p != '"' || jp_string(jp, &m.k, &m.kn) < 0) return -1;
            for (Py_ssize_t i = base; i < jp->nmems; i++) /* a key twice: orjson keeps the last; declined */
                if (jp->mems[i].kn == m.kn && memcmp(jp->mems[i].k, m.k, (size_t)m.kn) == 0) return -1;
            if (jp->nmems - base >= J_MEMBERS) return -1;
            jp_ws(jp);
            if (jp->p >= jp->end || *jp->p != ':') return -1;
            jp->p++;
            if (jp_value(jp, &m.v) < 0) return -1;
            if (jp->nmems == jp->capmems) {
                Py_ssize_t cap = jp->capmems ? jp->capmems * 2 : 64;
                JMem *grown = PyMem_Realloc(jp->mems, sizeof(JMem) * (size_t)cap);
                if (!grown) return -1;
                jp->mems = grown;
                jp->capmems = cap;
            }
            jp->mems[jp->nmems++] = m;
            jp_ws(jp);
            if (jp->p >= jp->end) return -1;
            if (*jp->p == ',') {
                jp->p++;
                continue;
            }
            if (*jp->p != '}') return -1;
            jp->p++;
            break;
        }
    }
    v->t = J_OBJ;
    v->n = jp->nmems - base;
    v->u.mem = NULL;
    if (v->n) {
        if (!(v->u.mem = jp_alloc(jp, sizeof(JMem) * (size_t)v->n))) return -1;
        memcpy(v->u.mem, jp->mems + base, sizeof(JMem) * (size_t)v->n);
    }
    jp->nmems = base;
    jp->depth--;
    return 0;
}

static int jp_value(JP *jp, JVal *v) {
    jp_ws(jp);
    if (jp->p >= jp->end) return -1;
    Py_ssize_t left = jp->end - jp->p;
    switch (*jp->p) {
    case '{': return jp_object(jp, v);
    case '[': return jp_array(jp, v);
    case '"': v->t = J_STR; return jp_string(jp, &v->u.s, &v->n);
    case 't':
        if (left < 4 || memcmp(jp->p, "true", 4) != 0) return -1;
        jp->p += 4;
        v->t = J_TRUE;
        return 0;
    case 'f':
        if (left < 5 || memcmp(jp->p, "false", 5) != 0) return -1;
        jp->p += 5;
        v->t = J_FALSE;
        return 0;
    case 'n':
        if (left < 4 || memcmp(jp->p, "null", 4) != 0) return -1;
        jp->p += 4;
        v->t = J_NULL;
        return 0;
    default:
        v->t = J_NUM;
        v->u.s = (const char *)jp->p; /* the number's text, re-emitted as it is */
        if (jp_number(jp) < 0) return -1;
        v->n = (const char *)jp->p - v->u.s;
        return 0;
    }
}

/* The document's tree: 0 (an object at the top, nothing after it), or -1: decline. */
static int jp_parse(JP *jp, const char *data, Py_ssize_t n, JVal *root) {
    jp->p = (const unsigned char *)data;
    jp->end = jp->p + n;
    if (jp_value(jp, root) < 0) return -1;
    jp_ws(jp);
    return jp->p == jp->end && root->t == J_OBJ ? 0 : -1;
}

/* ---- field access ------------------------------------------------------------------------------- */

typedef const JVal *JV;

/* Every key of the object d must be one of names[0..n); values[i] gets the value of names[i] or NULL. */
static int fields(JV d, const char *const *names, int n, JV *values) {
    for (int i = 0; i < n; i++) values[i] = NULL;
    for (Py_ssize_t m = 0; m < d->n; m++) {
        const JMem *mem = &d->u.mem[m];
        int i = 0;
        for (; i < n; i++)
            if (mem->kn && names[i][0] == mem->k[0] && (Py_ssize_t)strlen(names[i]) == mem->kn &&
                memcmp(names[i], mem->k, (size_t)mem->kn) == 0)
                break;
        if (i == n) return -1; /* a field the common shape does not have */
        values[i] = &mem->v;
    }
    return 0;
}

/* The value of key k in the object d, or NULL. */
static JV member(JV d, const char *k) {
    Py_ssize_t kn = (Py_ssize_t)strlen(k);
    for (Py_ssize_t m = 0; m < d->n; m++)
        if (d->u.mem[m].kn == kn && memcmp(d->u.mem[m].k, k, (size_t)kn) == 0) return &d->u.mem[m].v;
    return NULL;
}

static void jstr(JV v, Str *out) {
    out->obj = NULL;
    out->s = v->u.s;
    out->n = v->n;
}

/* An optional str field: absent or null → s = NULL; a str → its UTF-8; anything else → -1. */
static int opt_str(JV v, Str *out) {
    *out = (Str){NULL, NULL, 0};
    if (v == NULL || v->t == J_NULL) return 0;
    if (v->t != J_STR) return -1;
    jstr(v, out);
    return 0;
}

static int req_str(JV v, Str *out) {
    if (v == NULL || v->t != J_STR) return -1;
    jstr(v, out);
    return 0;
}

/* An optional list: absent or null → 0 items (list NULL); a list of at most MAX_ITEMS → it; else -1. */
static int opt_list(JV v, JV *list) {
    *list = NULL;
    if (v == NULL || v->t == J_NULL) return 0;
    if (v->t != J_ARR || v->n > MAX_ITEMS) return -1;
    *list = v;
    return 0;
}

#define LEN(l) ((l) ? (l)->n : 0)
#define ITEM(l, i) (&(l)->u.items[i])

/* str.isspace() for an ASCII byte */
static int ascii_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

/* str.strip() where it can be decided on bytes: 0 with *s trimmed, -1 when a non-ASCII character is at
 * either end (Unicode has spaces of its own: the exact reader decides). */
static int strip_str(Str *s) {
    while (s->n && ascii_space((unsigned char)s->s[0])) s->s++, s->n--;
    while (s->n && ascii_space((unsigned char)s->s[s->n - 1])) s->n--;
    if (s->n && ((unsigned char)s->s[0] >= 0x80 || (unsigned char)s->s[s->n - 1] >= 0x80)) return -1;
    return 0;
}

/* ---- the document's parts ----------------------------------------------------------------------- */

typedef struct {
    Str fixed, introduced, last; /* s == NULL: null */
    Str type;
} Range;

typedef struct {
    Str ecosystem, package, purl;
    Range *ranges;
    Py_ssize_t nranges;
    Str *versions;
    Py_ssize_t nversions;
} Affected;

typedef struct {
    PyObject *score; /* float or None, borrowed from the memo's tuple */
    Str vector, version;
} Cvss;

typedef struct {
    Str type, url;
} Ref;

static int cmp_opt(const Str *a, const Str *b) {
    /* None sorts as "" (fast_entry's keys use ``x or ""``; empty strings are declined). */
    static const Str empty = {NULL, "", 0};
    return str_cmp(a->s ? a : &empty, b->s ? b : &empty);
}

static int range_cmp(const Range *a, const Range *b) {
    int c = str_cmp(&a->type, &b->type);
    if (!c) c = cmp_opt(&a->introduced, &b->introduced);
    if (!c) c = cmp_opt(&a->fixed, &b->fixed);
    if (!c) c = cmp_opt(&a->last, &b->last);
    return c;
}

static int affected_cmp(const Affected *a, const Affected *b) {
    int c = str_cmp(&a->ecosystem, &b->ecosystem);
    if (!c) c = str_cmp(&a->package, &b->package);
    if (!c) c = cmp_opt(&a->purl, &b->purl);
    return c;
}

static int cvss_cmp(const Cvss *a, const Cvss *b) {
    int c = str_cmp(&a->version, &b->version);
    return c ? c : str_cmp(&a->vector, &b->vector);
}

static int ref_cmp(const Ref *a, const Ref *b) {
    int c = str_cmp(&a->url, &b->url);
    return c ? c : str_cmp(&a->type, &b->type);
}

static int strp_cmp(const Str *a, const Str *b) { return str_cmp(a, b); }

/* Stable insertion sorts: lists are at most MAX_ITEMS long and nearly always a handful. */
#define DEFINE_SORT(NAME, T, CMP)                                                                      \
    static void NAME(T *a, Py_ssize_t n) {                                                             \
        for (Py_ssize_t i = 1; i < n; i++) {                                                           \
            T x = a[i];                                                                                \
            Py_ssize_t j = i;                                                                          \
            while (j > 0 && CMP(&a[j - 1], &x) > 0) {                                                  \
                a[j] = a[j - 1];                                                                       \
                j--;                                                                                   \
            }                                                                                          \
            a[j] = x;                                                                                  \
        }                                                                                              \
    }
DEFINE_SORT(sort_ranges, Range, range_cmp)
DEFINE_SORT(sort_affected, Affected, affected_cmp)
DEFINE_SORT(sort_cvss, Cvss, cvss_cmp)
DEFINE_SORT(sort_refs, Ref, ref_cmp)
DEFINE_SORT(sort_strs, Str, strp_cmp)

/* Scratch memory of one call, freed all at once. */
typedef struct {
    void *blocks[2 * MAX_ITEMS + 16];
    int n;
    PyObject *owned[2 * MAX_ITEMS + 64]; /* new references to release at the end */
    int nowned;
} Arena;

static void *arena_alloc(Arena *a, size_t size) {
    if (a->n == (int)(sizeof(a->blocks) / sizeof(a->blocks[0]))) return NULL;
    void *p = PyMem_Malloc(size ? size : 1);
    if (p) a->blocks[a->n++] = p;
    return p;
}

static int arena_own(Arena *a, PyObject *o) {
    if (a->nowned == (int)(sizeof(a->owned) / sizeof(a->owned[0]))) {
        Py_DECREF(o);
        return -1;
    }
    a->owned[a->nowned++] = o;
    return 0;
}

static void arena_free(Arena *a) {
    for (int i = 0; i < a->n; i++) PyMem_Free(a->blocks[i]);
    for (int i = 0; i < a->nowned; i++) Py_DECREF(a->owned[i]);
    a->n = a->nowned = 0;
}

/* The Python str of a Str, made once and kept in s->obj (released with the arena); NULL on failure
 * (with an exception set, or none when the arena is full: decline). */
static PyObject *str_obj(Arena *ar, Str *s) {
    if (s->obj) return s->obj;
    PyObject *o = PyUnicode_DecodeUTF8(s->s, s->n, NULL);
    if (!o || arena_own(ar, o) < 0) return NULL;
    return s->obj = o;
}

/* str_obj's failure as a result code: -1 with an exception, else DECLINE. */
#define OBJ_FAILED() (PyErr_Occurred() ? -1 : DECLINE)

/* Result codes of the parts: 0 ok, 1 decline, -1 a Python exception is set. */
#define DECLINE 1

static const char *const EVENT_KINDS[] = {"introduced", "fixed", "last_affected", "limit"};

static int event_kind(const JMem *m) {
    for (int i = 0; i < 4; i++)
        if ((Py_ssize_t)strlen(EVENT_KINDS[i]) == m->kn && memcmp(EVENT_KINDS[i], m->k, (size_t)m->kn) == 0) return i;
    return -1;
}

/* _out_ranges: events → ranges, then unique + sorted, a bare "fixed" beside a range ending there dropped. */
static int out_ranges(Arena *ar, JV ranges, Range **out, Py_ssize_t *nout) {
    static const char *const RANGE_FIELDS[] = {"type", "events", "repo", "database_specific"};
    Py_ssize_t cap = 0, n = 0;
    for (Py_ssize_t i = 0; i < ranges->n; i++) {
        JV r = ITEM(ranges, i);
        if (r->t != J_OBJ) return DECLINE;
        JV v[4];
        if (fields(r, RANGE_FIELDS, 4, v) < 0 || !v[1] || v[1]->t != J_ARR) return DECLINE;
        cap += v[1]->n;
    }
    if (cap > MAX_ITEMS) return DECLINE;
    Range *rs = arena_alloc(ar, sizeof(Range) * (size_t)(cap ? cap : 1));
    if (!rs) return DECLINE;
    for (Py_ssize_t i = 0; i < ranges->n; i++) {
        JV r = ITEM(ranges, i);
        JV v[4];
        fields(r, RANGE_FIELDS, 4, v);
        Str type;
        if (req_str(v[0], &type) < 0) return DECLINE;
        if (!((type.n == 9 && !memcmp(type.s, "ECOSYSTEM", 9)) || (type.n == 6 && !memcmp(type.s, "SEMVER", 6)) ||
              (type.n == 3 && !memcmp(type.s, "GIT", 3))))
            return DECLINE;
        Str current = {NULL, NULL, 0}; /* the ``introduced`` of the open range */
        int open = 0;
        JV events = v[1];
        for (Py_ssize_t e = 0; e < events->n; e++) {
            JV ev = ITEM(events, e);
            if (ev->t != J_OBJ || ev->n != 1) return DECLINE;
            int kind = event_kind(&ev->u.mem[0]);
            Str value;
            if (kind < 0 || req_str(&ev->u.mem[0].v, &value) < 0 || value.n == 0) return DECLINE;
            Range *o = &rs[n];
            Str none = {NULL, NULL, 0};
            switch (kind) {
            case 0: /* introduced */
                if (open) {
                    *o = (Range){none, current, none, type};
                    n++;
                }
                current = value;
                open = 1;
                break;
            case 1: /* fixed */
                *o = (Range){value, open ? current : none, none, type};
                n++;
                open = 0;
                break;
            case 2: /* last_affected */
                *o = (Range){none, open ? current : none, value, type};
                n++;
                open = 0;
                break;
            default: /* limit */
                break;
            }
        }
        if (open) {
            Str none = {NULL, NULL, 0};
            rs[n++] = (Range){none, current, none, type};
        }
    }
    if (n > 1) {
        /* {key: r} keeps the last of equal keys; equal keys mean equal ranges here (no empty strings). */
        sort_ranges(rs, n);
        Py_ssize_t u = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (u == 0 || range_cmp(&rs[u - 1], &rs[i]) != 0) rs[u++] = rs[i];
        n = u;
        Py_ssize_t kept = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            Range *r = &rs[i];
            int drop = 0;
            if (!r->introduced.s && !r->last.s && r->fixed.s) {
                for (Py_ssize_t j = 0; j < n && !drop; j++)
                    if (rs[j].introduced.s && rs[j].fixed.s && str_cmp(&rs[j].fixed, &r->fixed) == 0) drop = 1;
            }
            if (!drop) rs[kept++] = *r;
        }
        n = kept;
    }
    *out = rs;
    *nout = n;
    return 0;
}

/* purl_fn(ecosystem, name, purl) → str | None, or False: decline. */
static int package_purl(Arena *ar, Str *eco, Str *name, Str *purl, Str *out) {
    PyObject *args[3] = {str_obj(ar, eco), str_obj(ar, name), purl->s ? str_obj(ar, purl) : Py_None};
    if (!args[0] || !args[1] || !args[2]) return OBJ_FAILED();
    PyObject *res = memo_call(purl_memo, purl_fn, args, 3);
    if (!res) return -1;
    if (arena_own(ar, res) < 0) return DECLINE;
    if (res == Py_False) return DECLINE;
    if (res == Py_None) {
        *out = (Str){NULL, NULL, 0};
        return 0;
    }
    if (!PyUnicode_CheckExact(res) || utf8(res, out) < 0 || out->n == 0) return DECLINE;
    return 0;
}

static int out_affected(Arena *ar, JV list, Affected **out, Py_ssize_t *nout) {
    static const char *const AFFECTED_FIELDS[] = {"package",  "ranges", "versions", "severity", "ecosystem_specific",
                                                  "database_specific"};
    static const char *const PACKAGE_FIELDS[] = {"ecosystem", "name", "purl"};
    Py_ssize_t n = list->n;
    Affected *as = arena_alloc(ar, sizeof(Affected) * (size_t)(n ? n : 1));
    if (!as) return DECLINE;
    for (Py_ssize_t i = 0; i < n; i++) {
        JV entry = ITEM(list, i);
        if (entry->t != J_OBJ) return DECLINE;
        JV v[6], p[3];
        if (fields(entry, AFFECTED_FIELDS, 6, v) < 0) return DECLINE;
        if (!v[0] || v[0]->t != J_OBJ || fields(v[0], PACKAGE_FIELDS, 3, p) < 0) return DECLINE;
        Affected *a = &as[i];
        Str given_purl;
        if (req_str(p[0], &a->ecosystem) < 0 || req_str(p[1], &a->package) < 0 || opt_str(p[2], &given_purl) < 0)
            return DECLINE;
        int rc = package_purl(ar, &a->ecosystem, &a->package, &given_purl, &a->purl);
        if (rc) return rc;
        JV ranges, versions;
        if (opt_list(v[1], &ranges) < 0 || opt_list(v[2], &versions) < 0) return DECLINE;
        a->ranges = NULL;
        a->nranges = 0;
        if (LEN(ranges)) {
            rc = out_ranges(ar, ranges, &a->ranges, &a->nranges);
            if (rc) return rc;
        }
        Py_ssize_t nv = LEN(versions);
        a->versions = arena_alloc(ar, sizeof(Str) * (size_t)(nv ? nv : 1));
        if (!a->versions) return DECLINE;
        a->nversions = 0;
        for (Py_ssize_t j = 0; j < nv; j++) { /* dict.fromkeys: first occurrences, in order */
            Str s;
            if (req_str(ITEM(versions, j), &s) < 0) return DECLINE;
            int seen = 0;
            for (Py_ssize_t k = 0; k < a->nversions && !seen; k++) seen = str_cmp(&a->versions[k], &s) == 0;
            if (!seen) a->versions[a->nversions++] = s;
        }
    }
    if (n > 1) {
        sort_affected(as, n);
        for (Py_ssize_t i = 1; i < n; i++)
            if (affected_cmp(&as[i - 1], &as[i]) == 0) return DECLINE; /* entries to fold: the general path */
    }
    *out = as;
    *nout = n;
    return 0;
}

/* cvss_fn(type, score) → None (decline), () (a type that is ignored) or (baseScore, vector, version, v3score). */
static int out_cvss(Arena *ar, JV list, Cvss **out, Py_ssize_t *nout, PyObject **best) {
    static const char *const SEVERITY_FIELDS[] = {"type", "score"};
    Py_ssize_t n = list->n, k = 0;
    Cvss *cs = arena_alloc(ar, sizeof(Cvss) * (size_t)(n ? n : 1));
    if (!cs) return DECLINE;
    double best_score = -1.0;
    *best = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        JV s = ITEM(list, i), v[2];
        if (s->t != J_OBJ || fields(s, SEVERITY_FIELDS, 2, v) < 0) return DECLINE;
        Str type, score;
        if (req_str(v[0], &type) < 0 || req_str(v[1], &score) < 0) return DECLINE;
        PyObject *args[2] = {str_obj(ar, &type), str_obj(ar, &score)};
        if (!args[0] || !args[1]) return OBJ_FAILED();
        PyObject *res = memo_call(cvss_memo, cvss_fn, args, 2);
        if (!res) return -1;
        if (arena_own(ar, res) < 0) return DECLINE;
        if (!PyTuple_CheckExact(res)) return DECLINE;
        if (PyTuple_GET_SIZE(res) == 0) continue;
        if (PyTuple_GET_SIZE(res) != 4) return DECLINE;
        Cvss *c = &cs[k];
        c->score = PyTuple_GET_ITEM(res, 0);
        if (utf8(PyTuple_GET_ITEM(res, 1), &c->vector) < 0 || utf8(PyTuple_GET_ITEM(res, 2), &c->version) < 0)
            return DECLINE;
        PyObject *v3 = PyTuple_GET_ITEM(res, 3);
        if (v3 != Py_None) {
            double d = PyFloat_AsDouble(v3);
            if (d == -1.0 && PyErr_Occurred()) return -1;
            if (*best == NULL || d > best_score) {
                best_score = d;
                *best = v3;
            }
        }
        k++;
    }
    sort_cvss(cs, k);
    *out = cs;
    *nout = k;
    return 0;
}

static int put_float(Buf *b, PyObject *f) {
    if (f == Py_None) return PUT(b, "null");
    PyObject *r = PyObject_Repr(f); /* shortest round trip, as orjson/msgspec write (checked by tests) */
    if (!r) return -1;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(r, &n);
    int rc = s ? buf_put(b, s, n) : -1;
    Py_DECREF(r);
    return rc;
}

static int put_str_list(Buf *b, const Str *items, Py_ssize_t n) {
    if (PUT(b, "[") < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((i && PUT(b, ",") < 0) || put_pystr(b, &items[i]) < 0) return -1;
    return PUT(b, "]");
}

/* Sort and drop duplicates in place; returns the new length. */
static Py_ssize_t sorted_unique(Str *items, Py_ssize_t n) {
    sort_strs(items, n);
    Py_ssize_t u = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (u == 0 || str_cmp(&items[u - 1], &items[i]) != 0) items[u++] = items[i];
    return u;
}

static const char *const DOC_FIELDS[] = {"id",       "modified", "schema_version", "published", "withdrawn",
                                         "aliases",  "upstream", "related",        "summary",   "details",
                                         "severity", "affected", "references",     "credits",   "database_specific"};
enum {
    F_ID,
    F_MODIFIED,
    F_SCHEMA,
    F_PUBLISHED,
    F_WITHDRAWN,
    F_ALIASES,
    F_UPSTREAM,
    F_RELATED,
    F_SUMMARY,
    F_DETAILS,
    F_SEVERITY,
    F_AFFECTED,
    F_REFERENCES,
    F_CREDITS,
    F_DBS,
    N_DOC_FIELDS
};

/* ^CVE-(\d{4})-(\d{4,})$ on ASCII: 1 a CVE id, 0 not one, -1 decline (non-ASCII after "CVE-": re's \d
 * also matches other scripts' digits, so only the exact reader may decide). */
static int cve_id(const Str *a) {
    if (a->n < 4 || memcmp(a->s, "CVE-", 4) != 0) return 0;
    for (Py_ssize_t i = 4; i < a->n; i++)
        if ((unsigned char)a->s[i] >= 0x80) return -1;
    if (a->n < 13 || a->s[8] != '-') return 0;
    for (Py_ssize_t i = 4; i < a->n; i++)
        if (i != 8 && (a->s[i] < '0' || a->s[i] > '9')) return 0;
    return 1;
}

/* cve_order: (int(year), int(number), id) */
static int cve_cmp(const Str *a, const Str *b) {
    int c = memcmp(a->s + 4, b->s + 4, 4);
    if (c) return c;
    const char *x = a->s + 9, *y = b->s + 9;
    Py_ssize_t nx = a->n - 9, ny = b->n - 9;
    while (nx > 1 && *x == '0') x++, nx--;
    while (ny > 1 && *y == '0') y++, ny--;
    if (nx != ny) return nx < ny ? -1 : 1;
    c = memcmp(x, y, (size_t)nx);
    return c ? c : str_cmp(a, b);
}

/* lowest_cve over the ids: its index, -1 for none, -2 decline. */
static Py_ssize_t lowest_cve(const Str *ids, Py_ssize_t n) {
    Py_ssize_t best = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        int is = cve_id(&ids[i]);
        if (is < 0) return -2;
        if (is && (best < 0 || cve_cmp(&ids[i], &ids[best]) < 0)) best = i;
    }
    return best;
}

static void set_cstr(Str *out, const char *s) {
    out->obj = NULL;
    out->s = s;
    out->n = (Py_ssize_t)strlen(s);
}

/* severity_word: 0 with *out set (s NULL: unknown word), DECLINE, -1 with an exception. */
static int severity_word(Arena *ar, Str *w, Str *out) {
    static const char *const WORDS[][2] = {{"none", "none"},   {"low", "low"},     {"moderate", "medium"},
                                           {"medium", "medium"}, {"important", "high"}, {"high", "high"},
                                           {"critical", "critical"}};
    *out = (Str){NULL, NULL, 0};
    for (Py_ssize_t j = 0; j < w->n; j++) {
        if ((unsigned char)w->s[j] < 0x80) continue;
        PyObject *word = str_obj(ar, w); /* Unicode case rules: Python's own */
        if (!word) return OBJ_FAILED();
        PyObject *r = PyObject_CallOneArg(severity_fn, word);
        if (!r) return -1;
        if (arena_own(ar, r) < 0) return DECLINE;
        if (r == Py_None) return 0;
        return PyUnicode_CheckExact(r) && utf8(r, out) == 0 ? 0 : DECLINE;
    }
    const char *s = w->s;
    Py_ssize_t n = w->n, i = 0;
    while (i < n && Py_UNICODE_ISSPACE((unsigned char)s[i])) i++;
    while (n > i && Py_UNICODE_ISSPACE((unsigned char)s[n - 1])) n--;
    char low[12];
    if (n - i > 10) return 0;
    for (Py_ssize_t j = i; j < n; j++) low[j - i] = (char)(s[j] >= 'A' && s[j] <= 'Z' ? s[j] + 32 : s[j]);
    low[n - i] = 0;
    for (size_t k = 0; k < sizeof(WORDS) / sizeof(WORDS[0]); k++)
        if (strcmp(low, WORDS[k][0]) == 0) {
            set_cstr(out, WORDS[k][1]);
            return 0;
        }
    return 0;
}

/* cvss.rating */
static const char *rating(double score) {
    if (score == 0) return "none";
    if (score < 4.0) return "low";
    if (score < 7.0) return "medium";
    if (score < 9.0) return "high";
    return "critical";
}

static int time_field(JV v, int required, Str *out) {
    if (required ? req_str(v, out) < 0 : opt_str(v, out) < 0) return DECLINE;
    if (!out->s) return 0;
    if (!canonical_time(out)) return DECLINE;
    if (out->n == 20 && memcmp(out->s, "0001-01-01T00:00:00Z", 20) == 0) *out = (Str){NULL, NULL, 0};
    return 0;
}

/* What build() found besides the canonical bytes (borrowed references, valid while the document lives). */
typedef struct {
    Str key;        /* the advisory key: the lowest CVE, else the id */
    Str *ids;       /* every id, sorted and unique (arena memory) */
    Py_ssize_t nids;
    PyObject *cve;  /* the lowest CVE (a str of the document) or Py_None */
    PyObject *key_obj;
    PyObject *recorded; /* ``modified`` or Py_None */
} Built;

/* The canonical bytes of a document into b: 0 with *out filled, DECLINE, or -1 with an exception. */
static int build(Arena *ar, Buf *b, JV doc, PyObject *source, PyObject *digest, Built *out) {
    JV f[N_DOC_FIELDS];
    if (doc->t != J_OBJ || fields(doc, DOC_FIELDS, N_DOC_FIELDS, f) < 0) return DECLINE;
    Str id, modified, published, withdrawn, summary, details, src, dig;
    if (req_str(f[F_ID], &id) < 0 || id.n == 0) return DECLINE;
    Str stripped = id;
    if (strip_str(&stripped) < 0 || stripped.n != id.n) return DECLINE; /* rare: the exact reader strips it */
    if (time_field(f[F_MODIFIED], 1, &modified) || time_field(f[F_PUBLISHED], 0, &published) ||
        time_field(f[F_WITHDRAWN], 0, &withdrawn))
        return DECLINE;
    if (opt_str(f[F_SUMMARY], &summary) < 0 || opt_str(f[F_DETAILS], &details) < 0) return DECLINE;
    if (summary.s && summary.n == 0) summary.s = NULL; /* ``or None`` */
    if (details.s && details.n == 0) details.s = NULL;
    if (utf8(source, &src) < 0 || utf8(digest, &dig) < 0) return DECLINE;

    JV aliases, related, severity, affected, references;
    if (opt_list(f[F_ALIASES], &aliases) < 0 || opt_list(f[F_RELATED], &related) < 0 ||
        opt_list(f[F_SEVERITY], &severity) < 0 || opt_list(f[F_AFFECTED], &affected) < 0 ||
        opt_list(f[F_REFERENCES], &references) < 0)
        return DECLINE;
    for (Py_ssize_t i = 0; i < LEN(related); i++)
        if (ITEM(related, i)->t != J_STR) return DECLINE;

    /* aliases: stripped, "" dropped, the id added, sorted and unique */
    Py_ssize_t na = LEN(aliases);
    Str *ids = arena_alloc(ar, sizeof(Str) * (size_t)(na + 1));
    if (!ids) return DECLINE;
    Py_ssize_t nids = 0;
    for (Py_ssize_t i = 0; i < na; i++) {
        if (req_str(ITEM(aliases, i), &ids[nids]) < 0 || strip_str(&ids[nids]) < 0) return DECLINE;
        if (ids[nids].n) nids++;
    }
    ids[nids++] = id;
    nids = sorted_unique(ids, nids);

    /* severity (database_specific.severity, else the rating of the best v3 score), cwes */
    Str word = {NULL, NULL, 0};
    Str *cwes = NULL;
    Py_ssize_t ncwes = 0;
    JV dbs = f[F_DBS];
    int rc;
    if (dbs && dbs->t != J_NULL) {
        if (dbs->t != J_OBJ) return DECLINE;
        JV w = member(dbs, "severity");
        if (w && w->t == J_STR) {
            Str ws;
            jstr(w, &ws);
            rc = severity_word(ar, &ws, &word);
            if (rc) return rc;
        }
        JV cw = member(dbs, "cwe_ids");
        if (cw && cw->t == J_ARR && cw->n) {
            if (cw->n > MAX_ITEMS) return DECLINE;
            cwes = arena_alloc(ar, sizeof(Str) * (size_t)cw->n);
            if (!cwes) return DECLINE;
            for (Py_ssize_t i = 0; i < cw->n; i++)
                if (ITEM(cw, i)->t == J_STR) jstr(ITEM(cw, i), &cwes[ncwes++]); /* isinstance(c, str) */
            ncwes = sorted_unique(cwes, ncwes);
        }
    }
    Cvss *cvss = NULL;
    Py_ssize_t ncvss = 0;
    PyObject *best = NULL;
    if (LEN(severity)) {
        rc = out_cvss(ar, severity, &cvss, &ncvss, &best);
        if (rc) return rc;
    }
    Str sev = {NULL, NULL, 0};
    if (word.s && word.n) {
        sev = word;
    } else if (best) {
        double d = PyFloat_AsDouble(best);
        if (d == -1.0 && PyErr_Occurred()) return -1;
        set_cstr(&sev, rating(d));
    }

    Ref *refs = NULL;
    Py_ssize_t nrefs = LEN(references);
    if (nrefs) {
        static const char *const REF_FIELDS[] = {"type", "url"};
        refs = arena_alloc(ar, sizeof(Ref) * (size_t)nrefs);
        if (!refs) return DECLINE;
        for (Py_ssize_t i = 0; i < nrefs; i++) {
            JV r = ITEM(references, i), v[2];
            if (r->t != J_OBJ || fields(r, REF_FIELDS, 2, v) < 0) return DECLINE;
            if (req_str(v[0], &refs[i].type) < 0 || req_str(v[1], &refs[i].url) < 0 || refs[i].url.n == 0)
                return DECLINE;
        }
        sort_refs(refs, nrefs);
    }

    Affected *aff = NULL;
    Py_ssize_t naff = 0;
    if (LEN(affected)) {
        rc = out_affected(ar, affected, &aff, &naff);
        if (rc) return rc;
    }

    /* the key: the lowest CVE among the ids, else the id */
    Py_ssize_t low = lowest_cve(ids, nids);
    if (low == -2) return DECLINE;
    for (Py_ssize_t i = 0; i < nids; i++) /* the ids go back to Python (key candidates, aliases) */
        if (!str_obj(ar, &ids[i])) return OBJ_FAILED();
    Py_ssize_t at_id = 0;
    while (str_cmp(&ids[at_id], &id) != 0) at_id++;
    id.obj = ids[at_id].obj;
    PyObject *cve = low >= 0 ? ids[low].obj : Py_None;
    Str key = low >= 0 ? ids[low] : id;

    /* the canonical bytes, keys in sorted order */
    if (PUT(b, "{\"advisoryKey\":") || put_pystr(b, &key) || PUT(b, ",\"affected\":[")) return -1;
    for (Py_ssize_t i = 0; i < naff; i++) {
        Affected *a = &aff[i];
        if ((i && PUT(b, ",")) || PUT(b, "{\"ecosystem\":") || put_pystr(b, &a->ecosystem) || PUT(b, ",\"package\":") ||
            put_pystr(b, &a->package) || PUT(b, ",\"purl\":") || put_opt(b, &a->purl) || PUT(b, ",\"ranges\":["))
            return -1;
        for (Py_ssize_t j = 0; j < a->nranges; j++) {
            Range *r = &a->ranges[j];
            if ((j && PUT(b, ",")) || PUT(b, "{\"fixed\":") || put_opt(b, &r->fixed) || PUT(b, ",\"introduced\":") ||
                put_opt(b, &r->introduced) || PUT(b, ",\"lastAffected\":") || put_opt(b, &r->last) ||
                PUT(b, ",\"type\":") || put_pystr(b, &r->type) || PUT(b, "}"))
                return -1;
        }
        if (PUT(b, "],\"versions\":") || put_str_list(b, a->versions, a->nversions) || PUT(b, "}")) return -1;
    }
    if (PUT(b, "],\"aliases\":") || put_str_list(b, ids, nids) || PUT(b, ",\"cvss\":[")) return -1;
    for (Py_ssize_t i = 0; i < ncvss; i++) {
        if ((i && PUT(b, ",")) || PUT(b, "{\"baseScore\":") || put_float(b, cvss[i].score) || PUT(b, ",\"vector\":") ||
            put_pystr(b, &cvss[i].vector) || PUT(b, ",\"version\":") || put_pystr(b, &cvss[i].version) || PUT(b, "}"))
            return -1;
    }
    if (PUT(b, "],\"cwes\":") || put_str_list(b, cwes, ncwes) || PUT(b, ",\"description\":") ||
        put_opt(b, &details) || PUT(b, ",\"modified\":") || put_opt(b, &modified) ||
        PUT(b, ",\"provenance\":[{\"digest\":") || put_pystr(b, &dig) || PUT(b, ",\"documentId\":") ||
        put_pystr(b, &id) || PUT(b, ",\"recordedAt\":") || put_opt(b, &modified) || PUT(b, ",\"source\":") ||
        put_pystr(b, &src) || PUT(b, "}],\"published\":") || put_opt(b, &published) || PUT(b, ",\"references\":["))
        return -1;
    for (Py_ssize_t i = 0; i < nrefs; i++) {
        if ((i && PUT(b, ",")) || PUT(b, "{\"type\":") || put_pystr(b, &refs[i].type) || PUT(b, ",\"url\":") ||
            put_pystr(b, &refs[i].url) || PUT(b, "}"))
            return -1;
    }
    if (PUT(b, "],\"severity\":") || put_opt(b, &sev) || PUT(b, ",\"summary\":") || put_opt(b, &summary) ||
        PUT(b, ",\"title\":") || put_opt(b, &summary) || PUT(b, ",\"withdrawn\":") || put_opt(b, &withdrawn) ||
        PUT(b, "}"))
        return -1;

    out->key = key;
    out->ids = ids;
    out->nids = nids;
    out->cve = cve;
    out->key_obj = key.obj;
    out->recorded = Py_None;
    if (modified.s && !(out->recorded = str_obj(ar, &modified))) return OBJ_FAILED();
    return 0;
}

PyDoc_STRVAR(entry_doc, "entry(data, source, digest) -> (blob, key, aliases, cve, recorded_at) | None\n\n"
                        "The canonical single-record advisory of an OSV JSON document (bytes) of the common\n"
                        "shape, or None: let the exact reader map it (or name what is wrong with it).");

static PyObject *entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "entry() takes exactly 3 arguments");
        return NULL;
    }
    if (!cvss_fn) {
        PyErr_SetString(PyExc_RuntimeError, "_osvc.configure() was not called");
        return NULL;
    }
    if (!PyUnicode_CheckExact(args[1]) || !PyUnicode_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "source and digest must be str");
        return NULL;
    }
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) return NULL;
    Arena ar;
    ar.n = ar.nowned = 0;
    Buf b = {NULL, 0, 0};
    Built got;
    PyObject *result = NULL;
    JP jp;
    memset(&jp, 0, sizeof(jp));
    JVal doc;
    int rc = jp_parse(&jp, data.buf, data.len, &doc) < 0 ? DECLINE : build(&ar, &b, &doc, args[1], args[2], &got);
    if (rc == 0) {
        PyObject *id_list = PyList_New(got.nids);
        if (id_list) {
            for (Py_ssize_t i = 0; i < got.nids; i++) {
                Py_INCREF(got.ids[i].obj);
                PyList_SET_ITEM(id_list, i, got.ids[i].obj);
            }
            result = Py_BuildValue("(y#ONOO)", b.p, b.len, got.key_obj, id_list, got.cve, got.recorded);
        }
    }
    arena_free(&ar);
    jp_free(&jp);
    PyBuffer_Release(&data);
    PyMem_Free(b.p);
    if (rc == DECLINE) Py_RETURN_NONE;
    return result; /* NULL with an exception when rc < 0 or building the tuple failed */
}


/* ---- staging (see staging.Stager) -------------------------------------------------------------- */

static uint32_t CRC_TABLE[256];

static void init_crc_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        CRC_TABLE[n] = c;
    }
}

/* zlib.crc32 */
static uint32_t crc32_of(const char *s, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) c = CRC_TABLE[(c ^ (unsigned char)s[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static int put_ll(Buf *b, long long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    return buf_put(b, tmp, n);
}

static int append_bytes(PyObject *ba, const char *s, Py_ssize_t n) {
    Py_ssize_t old = PyByteArray_GET_SIZE(ba);
    if (PyByteArray_Resize(ba, old + n) < 0) return -1;
    memcpy(PyByteArray_AS_STRING(ba) + old, s, (size_t)n);
    return 0;
}

/* tally[(mask, source)]: [records, latest recordedAt] += this record (staging.tally for one source). */
static int tally_one(PyObject *tally, PyObject *mask, PyObject *source, PyObject *recorded) {
    PyObject *key = PyTuple_Pack(2, mask, source);
    if (!key) return -1;
    PyObject *slot = PyDict_GetItemWithError(tally, key);
    int rc = -1;
    if (slot == NULL) {
        if (PyErr_Occurred()) goto done;
        PyObject *one = PyLong_FromLong(1);
        PyObject *fresh = one ? PyList_New(2) : NULL;
        if (!fresh) {
            Py_XDECREF(one);
            goto done;
        }
        PyList_SET_ITEM(fresh, 0, one);
        Py_INCREF(recorded);
        PyList_SET_ITEM(fresh, 1, recorded);
        rc = PyDict_SetItem(tally, key, fresh);
        Py_DECREF(fresh);
        goto done;
    }
    if (!PyList_CheckExact(slot) || PyList_GET_SIZE(slot) != 2) {
        PyErr_SetString(PyExc_TypeError, "tally slots must be [count, recordedAt] lists");
        goto done;
    }
    PyObject *count = PyNumber_Add(PyList_GET_ITEM(slot, 0), ONE);
    if (!count) goto done;
    PyList_SetItem(slot, 0, count); /* steals count */
    PyObject *last = PyList_GET_ITEM(slot, 1);
    if (recorded != Py_None) {
        int newer = last == Py_None ? 1 : PyUnicode_Compare(recorded, last) > 0;
        if (newer) {
            Py_INCREF(recorded);
            PyList_SetItem(slot, 1, recorded);
        }
    }
    rc = 0;
done:
    Py_DECREF(key);
    return rc;
}

/* Where a reader keeps its chunk (staging.Stager), and what every staged record of the chunk shares. */
typedef struct {
    PyObject *source, *mask, *rec, *offs, *keys, *buckets, *tally;
    long long prio;
    unsigned long long bits;
    Py_ssize_t nb;
} Sink;

/* args: source, priority, mask, rec, offs, keys, buckets, tally */
static int sink_from(Sink *s, PyObject *const *args) {
    if (!cvss_fn || !sha256_fn) {
        PyErr_SetString(PyExc_RuntimeError, "_osvc.configure() was not called");
        return -1;
    }
    s->source = args[0];
    s->mask = args[2];
    s->rec = args[3];
    s->offs = args[4];
    s->keys = args[5];
    s->buckets = args[6];
    s->tally = args[7];
    if (!PyUnicode_CheckExact(s->source) || !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(s->mask) ||
        !PyByteArray_CheckExact(s->rec) || !PyByteArray_CheckExact(s->offs) || !PyList_CheckExact(s->keys) ||
        !PyList_CheckExact(s->buckets) || (s->tally != Py_None && !PyDict_CheckExact(s->tally))) {
        PyErr_SetString(PyExc_TypeError, "stage: wrong argument types");
        return -1;
    }
    s->nb = PyList_GET_SIZE(s->buckets);
    if (s->nb < 1 || (s->nb & (s->nb - 1))) {
        PyErr_SetString(PyExc_ValueError, "stage: the number of buckets must be a power of two");
        return -1;
    }
    s->prio = PyLong_AsLongLong(args[1]);
    s->bits = PyLong_AsUnsignedLongLong(s->mask);
    return PyErr_Occurred() ? -1 : 0;
}

#define STAGE_DECLINED (-2)

/* Stage one decoded document as record k at offset at: the entry's size, STAGE_DECLINED (nothing
 * appended), or -1 with an exception. */
static Py_ssize_t stage_one(Sink *s, JV doc, PyObject *digest, PyObject *k, long long at) {
    Arena ar;
    ar.n = ar.nowned = 0;
    Buf b = {NULL, 0, 0}, head = {NULL, 0, 0};
    Built got;
    PyObject *hex = NULL;
    Py_ssize_t result = -1;
    int rc = build(&ar, &b, doc, s->source, digest, &got);
    if (rc) {
        if (rc == DECLINE) result = STAGE_DECLINED;
        goto out;
    }
    /* the blob's digest, by hashlib (OpenSSL) */
    PyObject *view = PyMemoryView_FromMemory(b.p, b.len, PyBUF_READ);
    if (!view) goto out;
    PyObject *h = PyObject_CallOneArg(sha256_fn, view);
    Py_DECREF(view);
    if (!h) goto out;
    hex = PyObject_CallMethod(h, "hexdigest", NULL);
    Py_DECREF(h);
    Py_ssize_t hn;
    const char *hs = hex ? PyUnicode_AsUTF8AndSize(hex, &hn) : NULL;
    if (!hs) goto out;
    /* [digest, mask, [[source, recordedAt]], priority] \n [key, digest] \n — as orjson.dumps writes them */
    Str src, rec_at = {NULL, NULL, 0};
    if (utf8(s->source, &src) < 0 || (got.recorded != Py_None && utf8(got.recorded, &rec_at) < 0)) {
        PyErr_SetString(PyExc_ValueError, "stage: source is not valid UTF-8");
        goto out;
    }
    char num[32];
    int numn = snprintf(num, sizeof(num), "%llu", s->bits);
    if (PUT(&head, "[\"sha256:") || buf_put(&head, hs, hn) || PUT(&head, "\",") || buf_put(&head, num, numn) ||
        PUT(&head, ",[[") || put_pystr(&head, &src) || PUT(&head, ",") || put_opt(&head, &rec_at) || PUT(&head, "]],") ||
        put_ll(&head, s->prio) || PUT(&head, "]\n[") || put_pystr(&head, &got.key) || PUT(&head, ",\"sha256:") ||
        buf_put(&head, hs, hn) || PUT(&head, "\"]\n"))
        goto out;
    int64_t at64 = (int64_t)at;
    if (append_bytes(s->rec, head.p, head.len) || append_bytes(s->rec, b.p, b.len) ||
        append_bytes(s->offs, (const char *)&at64, 8))
        goto out;
    if (PyList_Append(s->keys, got.cve) || PyList_Append(s->keys, got.key_obj)) goto out;
    for (Py_ssize_t i = 0; i < got.nids; i++) {
        uint32_t bucket_no = crc32_of(got.ids[i].s, got.ids[i].n) & (uint32_t)(s->nb - 1);
        PyObject *bucket = PyList_GET_ITEM(s->buckets, (Py_ssize_t)bucket_no);
        if (!PyList_CheckExact(bucket) || PyList_Append(bucket, k) || PyList_Append(bucket, got.ids[i].obj)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "stage: buckets must be lists");
            goto out;
        }
    }
    if (s->tally != Py_None && tally_one(s->tally, s->mask, s->source, got.recorded) < 0) goto out;
    result = head.len + b.len;
out:
    Py_XDECREF(hex);
    arena_free(&ar);
    PyMem_Free(b.p);
    PyMem_Free(head.p);
    return result;
}

PyDoc_STRVAR(stage_doc,
             "stage(data, digest, k, pos, source, priority, mask, rec, offs, keys, buckets, tally) -> int | None\n\n"
             "Stager.add_entry(entry(doc, source, digest), ...) in one step: appends the staged entry (meta\n"
             "line, state line, canonical bytes) to the bytearray rec, its offset pos (int64) to offs, the\n"
             "key candidates to keys, (k, alias) to buckets[crc32(alias) % len(buckets)], counts the record\n"
             "in tally (a dict, or None); returns the entry's length, or None (nothing appended): decline.");

static PyObject *stage(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Sink sink;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "stage() takes exactly 12 arguments");
        return NULL;
    }
    if (sink_from(&sink, args + 4) < 0) return NULL;
    if (!PyUnicode_CheckExact(args[1]) || !PyLong_CheckExact(args[2]) || !PyLong_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "stage(): wrong argument types");
        return NULL;
    }
    long long at = PyLong_AsLongLong(args[3]);
    if (at == -1 && PyErr_Occurred()) return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) return NULL;
    JP jp;
    memset(&jp, 0, sizeof(jp));
    JVal doc;
    Py_ssize_t size = jp_parse(&jp, data.buf, data.len, &doc) < 0 ? STAGE_DECLINED
                                                                   : stage_one(&sink, &doc, args[1], args[2], at);
    jp_free(&jp);
    PyBuffer_Release(&data);
    if (size == STAGE_DECLINED) Py_RETURN_NONE;
    return size < 0 ? NULL : PyLong_FromSsize_t(size);
}

#define FIRST_READ (1 << 16) /* staging.read_bytes reads files under 64 KiB in one go; others go there */

/* The bytes of a small file (< FIRST_READ and <= max_bytes), or NULL with no exception: decline. */
static PyObject *read_small(PyObject *path, Py_ssize_t max_bytes, char *buf) {
    PyObject *fs = NULL;
    if (!PyUnicode_FSConverter(path, &fs)) {
        PyErr_Clear();
        return NULL;
    }
    int fd = open(PyBytes_AS_STRING(fs), O_RDONLY | O_CLOEXEC);
    Py_DECREF(fs);
    if (fd < 0) return NULL;
    Py_ssize_t n = 0;
    while (n < FIRST_READ) {
        ssize_t got = read(fd, buf + n, (size_t)(FIRST_READ - n));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            n = -1;
            break;
        }
        if (got == 0) break;
        n += got;
    }
    close(fd);
    if (n < 0 || n >= FIRST_READ || n > max_bytes) return NULL;
    return PyBytes_FromStringAndSize(buf, n);
}

static int is_json_path(PyObject *p) {
    if (!PyUnicode_CheckExact(p)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(p);
    if (n < 5) return 0;
    PyObject *tail = PyUnicode_Substring(p, n - 5, n);
    if (!tail) {
        PyErr_Clear();
        return 0;
    }
    int ok = PyUnicode_CompareWithASCIIString(tail, ".json") == 0;
    Py_DECREF(tail);
    return ok;
}

PyDoc_STRVAR(stage_files_doc,
             "stage_files(paths, start, max_bytes, k, pos, source, priority, mask, rec, offs, keys, buckets,\n"
             "            tally) -> (next, staged, pos)\n\n"
             "Read (as staging.read_bytes does), hash, decode and stage(...) paths[start:] in order, record\n"
             "k, k + 1, …; stop at the first path that is not a small, readable .json file or whose document\n"
             "is declined, and return its index (len(paths) when none), how many were staged and the new\n"
             "offset. The caller takes that path through the general reader and goes on after it.");

static PyObject *stage_files(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Sink sink;
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "stage_files() takes exactly 13 arguments");
        return NULL;
    }
    PyObject *paths = args[0];
    if (!PyList_CheckExact(paths) || !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[2]) ||
        !PyLong_CheckExact(args[3]) || !PyLong_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError, "stage_files(): wrong argument types");
        return NULL;
    }
    if (sink_from(&sink, args + 5) < 0) return NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), max_bytes = PyLong_AsSsize_t(args[2]);
    long long k = PyLong_AsLongLong(args[3]), at = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    char *buf = PyMem_Malloc(FIRST_READ);
    if (!buf) return PyErr_NoMemory();
    Py_ssize_t i = start < 0 ? 0 : start, n = PyList_GET_SIZE(paths), staged = 0;
    int failed = 0;
    for (; i < n; i++) {
        PyObject *path = PyList_GET_ITEM(paths, i);
        if (!is_json_path(path)) break;
        PyObject *data = read_small(path, max_bytes, buf);
        if (!data) break;
        PyObject *h = PyObject_CallOneArg(sha256_fn, data);
        PyObject *hex = h ? PyObject_CallMethod(h, "hexdigest", NULL) : NULL;
        Py_XDECREF(h);
        PyObject *digest = hex ? PyUnicode_FromFormat("sha256:%U", hex) : NULL;
        Py_XDECREF(hex);
        if (!digest) {
            Py_DECREF(data);
            failed = 1;
            break;
        }
        JP jp;
        memset(&jp, 0, sizeof(jp));
        JVal doc;
        PyObject *kobj = NULL;
        Py_ssize_t size = STAGE_DECLINED; /* not JSON this reader takes: the general path decides */
        if (jp_parse(&jp, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &doc) == 0) {
            kobj = PyLong_FromLongLong(k);
            size = kobj ? stage_one(&sink, &doc, digest, kobj, at) : -1;
        }
        Py_XDECREF(kobj);
        jp_free(&jp);
        Py_DECREF(data);
        Py_DECREF(digest);
        if (size == STAGE_DECLINED) break;
        if (size < 0) {
            failed = 1;
            break;
        }
        at += size;
        k++;
        staged++;
    }
    PyMem_Free(buf);
    if (failed) return NULL;
    return Py_BuildValue("(nnL)", i, staged, at);
}


/* ---- merging records (merge.merge for two or more canonical records) -------------------------- */
/*
 * The records are canonical single-record advisories as staged (orjson's bytes, keys sorted), so the
 * strict reader takes them; a merged advisory is written from their values: strings re-escaped, the
 * numbers (CVSS base scores) copied as orjson wrote them. The rules are merge.merge's, field by field
 * (tests compare both on merge groups of the corpus and on random records).
 */

static const char *const RECORD_FIELDS[] = {"advisoryKey", "affected",   "aliases",   "cvss",     "cwes",
                                            "description", "modified",   "provenance", "published", "references",
                                            "severity",    "summary",    "title",      "withdrawn"};
enum {
    R_KEY, R_AFFECTED, R_ALIASES, R_CVSS, R_CWES, R_DESCRIPTION, R_MODIFIED, R_PROVENANCE, R_PUBLISHED,
    R_REFERENCES, R_SEVERITY, R_SUMMARY, R_TITLE, R_WITHDRAWN, N_RECORD_FIELDS
};

typedef struct {
    JV f[N_RECORD_FIELDS];
    long long prio;
    Str doc_id, digest, key; /* order_key: (priority, provenance[0].documentId, .digest, advisoryKey) */
} Rec;

static int rec_cmp(const Rec *a, const Rec *b) {
    if (a->prio != b->prio) return a->prio < b->prio ? -1 : 1;
    int c = str_cmp(&a->doc_id, &b->doc_id);
    if (!c) c = str_cmp(&a->digest, &b->digest);
    if (!c) c = str_cmp(&a->key, &b->key);
    return c;
}
DEFINE_SORT(sort_recs, Rec, rec_cmp)

/* A canonical JSON value as orjson writes it with sorted keys. */
static int put_jval(Buf *b, JV v, int depth) {
    if (depth > J_DEPTH) return -1;
    switch (v->t) {
    case J_NULL: return PUT(b, "null");
    case J_TRUE: return PUT(b, "true");
    case J_FALSE: return PUT(b, "false");
    case J_NUM: return buf_put(b, v->u.s, v->n);
    case J_STR: return put_str(b, v->u.s, v->n);
    case J_ARR:
        if (PUT(b, "[")) return -1;
        for (Py_ssize_t i = 0; i < v->n; i++)
            if ((i && PUT(b, ",")) || put_jval(b, ITEM(v, i), depth + 1)) return -1;
        return PUT(b, "]");
    default: {
        /* members in key order (as staged they already are; checked, not assumed) */
        if (PUT(b, "{")) return -1;
        for (Py_ssize_t i = 0; i < v->n; i++) {
            const JMem *m = &v->u.mem[i];
            if (i) {
                Str prev = {NULL, v->u.mem[i - 1].k, v->u.mem[i - 1].kn}, cur = {NULL, m->k, m->kn};
                if (str_cmp(&prev, &cur) >= 0) return -2;
            }
            if ((i && PUT(b, ",")) || put_str(b, m->k, m->kn) || PUT(b, ":")) return -1;
            int rc = put_jval(b, &m->v, depth + 1);
            if (rc) return rc;
        }
        return PUT(b, "}");
    }
    }
}

/* _time_order: a stamp without a fraction sorts as if it had ".000000". */
static int time_cmp(const Str *a, const Str *b) {
    char x[80], y[80];
    const Str *in[2] = {a, b};
    char *out[2] = {x, y};
    Py_ssize_t n[2];
    for (int i = 0; i < 2; i++) {
        const Str *t = in[i];
        if (t->n < 1 || t->n > 60) return 2; /* caller declines */
        if (memchr(t->s, '.', (size_t)t->n)) {
            memcpy(out[i], t->s, (size_t)t->n);
            n[i] = t->n;
        } else {
            memcpy(out[i], t->s, (size_t)(t->n - 1));
            memcpy(out[i] + t->n - 1, ".000000Z", 8);
            n[i] = t->n + 7;
        }
    }
    Str px = {NULL, x, n[0]}, py = {NULL, y, n[1]};
    return str_cmp(&px, &py) < 0 ? -1 : str_cmp(&px, &py) > 0;
}

typedef struct {
    Str k1, k2, k3; /* sort key */
    JV v;
    Py_ssize_t order; /* position of first appearance (affected) */
} Keyed;

static int keyed_cmp(const Keyed *a, const Keyed *b) {
    int c = str_cmp(&a->k1, &b->k1);
    if (!c) c = str_cmp(&a->k2, &b->k2);
    if (!c) c = str_cmp(&a->k3, &b->k3);
    return c;
}
DEFINE_SORT(sort_keyed, Keyed, keyed_cmp)

/* {key: value for ...} (the last value of a key wins), sorted by key: returns the count kept. */
static Py_ssize_t last_wins_sorted(Keyed *items, Py_ssize_t n) {
    sort_keyed(items, n); /* stable: equal keys keep their order, so the last of a run is the last given */
    Py_ssize_t u = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (u && keyed_cmp(&items[u - 1], &items[i]) == 0)
            items[u - 1] = items[i];
        else
            items[u++] = items[i];
    }
    return u;
}

static int str_or_null(JV v, Str *out) { return opt_str(v, out) < 0 ? -1 : 0; }

static int merge_records(Arena *ar, Buf *b, Str *key, Rec *recs, Py_ssize_t nrec) {
    sort_recs(recs, nrec);
    Py_ssize_t total;
    /* aliases: sorted union with the key */
    total = 1;
    for (Py_ssize_t r = 0; r < nrec; r++) total += recs[r].f[R_ALIASES]->n;
    if (total > 4 * MAX_ITEMS) return DECLINE;
    Str *aliases = arena_alloc(ar, sizeof(Str) * (size_t)total);
    if (!aliases) return DECLINE;
    Py_ssize_t na = 0;
    aliases[na++] = *key;
    for (Py_ssize_t r = 0; r < nrec; r++)
        for (Py_ssize_t i = 0; i < recs[r].f[R_ALIASES]->n; i++)
            if (req_str(ITEM(recs[r].f[R_ALIASES], i), &aliases[na++]) < 0) return DECLINE;
    na = sorted_unique(aliases, na);

    /* title, summary, description: the first non-empty in record order */
    Str firsts[3] = {{NULL, NULL, 0}, {NULL, NULL, 0}, {NULL, NULL, 0}};
    const int first_fields[3] = {R_TITLE, R_SUMMARY, R_DESCRIPTION};
    for (int f = 0; f < 3; f++)
        for (Py_ssize_t r = 0; r < nrec && !firsts[f].s; r++) {
            Str v;
            if (str_or_null(recs[r].f[first_fields[f]], &v) < 0) return DECLINE;
            if (v.s && v.n) firsts[f] = v;
        }

    /* published: earliest; modified: latest; withdrawn: latest, only when every record is withdrawn */
    Str published = {NULL, NULL, 0}, modified = {NULL, NULL, 0}, withdrawn = {NULL, NULL, 0};
    int all_withdrawn = 1;
    for (Py_ssize_t r = 0; r < nrec; r++) {
        Str p, m, w;
        if (str_or_null(recs[r].f[R_PUBLISHED], &p) < 0 || str_or_null(recs[r].f[R_MODIFIED], &m) < 0 ||
            str_or_null(recs[r].f[R_WITHDRAWN], &w) < 0)
            return DECLINE;
        int c;
        if (p.s && p.n) {
            if (published.s && (c = time_cmp(&p, &published)) == 2) return DECLINE;
            if (!published.s || c < 0) published = p;
        }
        if (m.s && m.n) {
            if (modified.s && (c = time_cmp(&m, &modified)) == 2) return DECLINE;
            if (!modified.s || c > 0) modified = m;
        }
        if (w.s && w.n) {
            if (withdrawn.s && (c = time_cmp(&w, &withdrawn)) == 2) return DECLINE;
            if (!withdrawn.s || c > 0) withdrawn = w;
        } else {
            all_withdrawn = 0;
        }
    }
    if (!all_withdrawn) withdrawn.s = NULL;

    /* severity: the highest any record states (SEVERITY_RANK) */
    static const char *const RANKS[] = {"none", "low", "medium", "high", "critical"};
    Str severity = {NULL, NULL, 0};
    int best_rank = -1;
    for (Py_ssize_t r = 0; r < nrec; r++) {
        Str v;
        if (str_or_null(recs[r].f[R_SEVERITY], &v) < 0) return DECLINE;
        if (!v.s) continue;
        for (int k = 0; k < 5; k++)
            if ((Py_ssize_t)strlen(RANKS[k]) == v.n && memcmp(RANKS[k], v.s, (size_t)v.n) == 0 && k > best_rank) {
                best_rank = k;
                severity = v;
            }
    }

    /* cvss by (version, vector), references by (url, type), provenance by (source, documentId, digest):
     * the last of a key wins, sorted by key; cwes: sorted union */
    Keyed *lists[3];
    Py_ssize_t counts[3];
    const int list_fields[3] = {R_CVSS, R_REFERENCES, R_PROVENANCE};
    static const char *const KEY_NAMES[3][3] = {
        {"version", "vector", NULL}, {"url", "type", NULL}, {"source", "documentId", "digest"}};
    for (int l = 0; l < 3; l++) {
        total = 0;
        for (Py_ssize_t r = 0; r < nrec; r++) total += recs[r].f[list_fields[l]]->n;
        if (total > 4 * MAX_ITEMS) return DECLINE;
        lists[l] = arena_alloc(ar, sizeof(Keyed) * (size_t)(total ? total : 1));
        if (!lists[l]) return DECLINE;
        Py_ssize_t n = 0;
        for (Py_ssize_t r = 0; r < nrec; r++)
            for (Py_ssize_t i = 0; i < recs[r].f[list_fields[l]]->n; i++) {
                JV item = ITEM(recs[r].f[list_fields[l]], i);
                if (item->t != J_OBJ) return DECLINE;
                Keyed *k = &lists[l][n++];
                Str *ks[3] = {&k->k1, &k->k2, &k->k3};
                for (int j = 0; j < 3; j++) {
                    *ks[j] = (Str){NULL, "", 0};
                    if (KEY_NAMES[l][j] && req_str(member(item, KEY_NAMES[l][j]), ks[j]) < 0) return DECLINE;
                }
                k->v = item;
            }
        counts[l] = last_wins_sorted(lists[l], n);
    }
    total = 0;
    for (Py_ssize_t r = 0; r < nrec; r++) total += recs[r].f[R_CWES]->n;
    Str *cwes = arena_alloc(ar, sizeof(Str) * (size_t)(total ? total : 1));
    if (!cwes) return DECLINE;
    Py_ssize_t ncwes = 0;
    for (Py_ssize_t r = 0; r < nrec; r++)
        for (Py_ssize_t i = 0; i < recs[r].f[R_CWES]->n; i++)
            if (req_str(ITEM(recs[r].f[R_CWES], i), &cwes[ncwes++]) < 0) return DECLINE;
    ncwes = sorted_unique(cwes, ncwes);

    /* affected: one entry per (ecosystem, package, purl or ""), ranges and versions joined (merge_affected) */
    total = 0;
    for (Py_ssize_t r = 0; r < nrec; r++) total += recs[r].f[R_AFFECTED]->n;
    if (total > 4 * MAX_ITEMS) return DECLINE;
    Keyed *aff = arena_alloc(ar, sizeof(Keyed) * (size_t)(total ? total : 1));
    if (!aff) return DECLINE;
    Py_ssize_t naff = 0;
    for (Py_ssize_t r = 0; r < nrec; r++)
        for (Py_ssize_t i = 0; i < recs[r].f[R_AFFECTED]->n; i++) {
            JV a = ITEM(recs[r].f[R_AFFECTED], i);
            if (a->t != J_OBJ) return DECLINE;
            Keyed *k = &aff[naff];
            JV purl = member(a, "purl");
            if (req_str(member(a, "ecosystem"), &k->k1) < 0 || req_str(member(a, "package"), &k->k2) < 0 ||
                !purl || str_or_null(purl, &k->k3) < 0)
                return DECLINE;
            if (k->k3.s && k->k3.n == 0) return DECLINE; /* "" and null would share a key */
            if (!k->k3.s) k->k3 = (Str){NULL, "", 0};
            JV ranges = member(a, "ranges"), versions = member(a, "versions");
            if (!ranges || ranges->t != J_ARR || !versions || versions->t != J_ARR || a->n != 5) return DECLINE;
            k->v = a;
            k->order = naff++;
        }
    /* group: stable sort by key, each run is one entry (the first appearance gives ecosystem/package/purl) */
    sort_keyed(aff, naff);

    if (PUT(b, "{\"advisoryKey\":") || put_pystr(b, key) || PUT(b, ",\"affected\":[")) return -1;
    Py_ssize_t written = 0;
    for (Py_ssize_t i = 0; i < naff;) {
        Py_ssize_t j = i + 1;
        while (j < naff && keyed_cmp(&aff[i], &aff[j]) == 0) j++;
        /* the run aff[i..j) in order of appearance (stable sort kept it) */
        Py_ssize_t nr = 0, nv = 0;
        for (Py_ssize_t x = i; x < j; x++) {
            nr += member(aff[x].v, "ranges")->n;
            nv += member(aff[x].v, "versions")->n;
        }
        if (nr > 4 * MAX_ITEMS || nv > 4 * MAX_ITEMS) return DECLINE;
        Range *rs = arena_alloc(ar, sizeof(Range) * (size_t)(nr ? nr : 1));
        Str *vs = arena_alloc(ar, sizeof(Str) * (size_t)(nv ? nv : 1));
        if (!rs || !vs) return DECLINE;
        Py_ssize_t n = 0, m = 0;
        for (Py_ssize_t x = i; x < j; x++) {
            JV ranges = member(aff[x].v, "ranges"), versions = member(aff[x].v, "versions");
            for (Py_ssize_t y = 0; y < ranges->n; y++) {
                JV rg = ITEM(ranges, y), rf[4];
                static const char *const RANGE_KEYS[] = {"fixed", "introduced", "lastAffected", "type"};
                if (rg->t != J_OBJ || rg->n != 4 || fields(rg, RANGE_KEYS, 4, rf) < 0) return DECLINE;
                Range *o = &rs[n++];
                if (str_or_null(rf[0], &o->fixed) < 0 || str_or_null(rf[1], &o->introduced) < 0 ||
                    str_or_null(rf[2], &o->last) < 0 || req_str(rf[3], &o->type) < 0)
                    return DECLINE;
                if ((o->fixed.s && !o->fixed.n) || (o->introduced.s && !o->introduced.n) || (o->last.s && !o->last.n))
                    return DECLINE; /* "" and null would share a key */
            }
            for (Py_ssize_t y = 0; y < versions->n; y++) {
                Str v;
                if (req_str(ITEM(versions, y), &v) < 0) return DECLINE;
                int seen = 0;
                for (Py_ssize_t z = 0; z < m && !seen; z++) seen = str_cmp(&vs[z], &v) == 0;
                if (!seen) vs[m++] = v;
            }
        }
        if (n > 1) { /* as _out_ranges: unique (the last of a key), sorted, a bare "fixed" beside a range dropped */
            sort_ranges(rs, n);
            Py_ssize_t u = 0;
            for (Py_ssize_t y = 0; y < n; y++)
                if (u == 0 || range_cmp(&rs[u - 1], &rs[y]) != 0) rs[u++] = rs[y];
            n = u;
            Py_ssize_t kept = 0;
            for (Py_ssize_t y = 0; y < n; y++) {
                Range *rr = &rs[y];
                int drop = 0;
                if (!rr->introduced.s && !rr->last.s && rr->fixed.s)
                    for (Py_ssize_t z = 0; z < n && !drop; z++)
                        if (rs[z].introduced.s && rs[z].fixed.s && str_cmp(&rs[z].fixed, &rr->fixed) == 0) drop = 1;
                if (!drop) rs[kept++] = *rr;
            }
            n = kept;
        }
        Keyed *first = &aff[i];
        Str purl;
        if (str_or_null(member(first->v, "purl"), &purl) < 0) return DECLINE;
        if ((written++ && PUT(b, ",")) || PUT(b, "{\"ecosystem\":") || put_pystr(b, &first->k1) ||
            PUT(b, ",\"package\":") || put_pystr(b, &first->k2) || PUT(b, ",\"purl\":") || put_opt(b, &purl) ||
            PUT(b, ",\"ranges\":["))
            return -1;
        for (Py_ssize_t y = 0; y < n; y++) {
            Range *rr = &rs[y];
            if ((y && PUT(b, ",")) || PUT(b, "{\"fixed\":") || put_opt(b, &rr->fixed) || PUT(b, ",\"introduced\":") ||
                put_opt(b, &rr->introduced) || PUT(b, ",\"lastAffected\":") || put_opt(b, &rr->last) ||
                PUT(b, ",\"type\":") || put_pystr(b, &rr->type) || PUT(b, "}"))
                return -1;
        }
        if (PUT(b, "],\"versions\":") || put_str_list(b, vs, m) || PUT(b, "}")) return -1;
        i = j;
    }
    if (PUT(b, "],\"aliases\":") || put_str_list(b, aliases, na) || PUT(b, ",\"cvss\":[")) return -1;
    for (Py_ssize_t i = 0; i < counts[0]; i++) {
        int rc = (i && PUT(b, ",")) ? -1 : put_jval(b, lists[0][i].v, 0);
        if (rc) return rc == -2 ? DECLINE : -1;
    }
    if (PUT(b, "],\"cwes\":") || put_str_list(b, cwes, ncwes) || PUT(b, ",\"description\":") ||
        put_opt(b, &firsts[2]) || PUT(b, ",\"modified\":") || put_opt(b, &modified) || PUT(b, ",\"provenance\":["))
        return -1;
    for (Py_ssize_t i = 0; i < counts[2]; i++) {
        int rc = (i && PUT(b, ",")) ? -1 : put_jval(b, lists[2][i].v, 0);
        if (rc) return rc == -2 ? DECLINE : -1;
    }
    if (PUT(b, "],\"published\":") || put_opt(b, &published) || PUT(b, ",\"references\":[")) return -1;
    for (Py_ssize_t i = 0; i < counts[1]; i++) {
        int rc = (i && PUT(b, ",")) ? -1 : put_jval(b, lists[1][i].v, 0);
        if (rc) return rc == -2 ? DECLINE : -1;
    }
    if (PUT(b, "],\"severity\":") || put_opt(b, &severity) || PUT(b, ",\"summary\":") || put_opt(b, &firsts[1]) ||
        PUT(b, ",\"title\":") || put_opt(b, &firsts[0]) || PUT(b, ",\"withdrawn\":") || put_opt(b, &withdrawn) ||
        PUT(b, "}"))
        return -1;
    return 0;
}

PyDoc_STRVAR(merge_doc, "merge(key, records) -> bytes | None\n\n"
                        "merge.merge(key, [record, ...]) of two or more staged records, given as (priority,\n"
                        "canonical bytes) pairs, as canonical bytes; None: let merge.merge do it.");

static PyObject *merge_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyUnicode_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "merge(key: str, records: list[tuple[int, bytes]])");
        return NULL;
    }
    Py_ssize_t nrec = PyList_GET_SIZE(args[1]);
    if (nrec < 2 || nrec > MAX_ITEMS) Py_RETURN_NONE;
    Str key;
    if (utf8(args[0], &key) < 0) Py_RETURN_NONE;
    Arena ar;
    ar.n = ar.nowned = 0;
    Buf b = {NULL, 0, 0};
    JP jp;
    memset(&jp, 0, sizeof(jp));
    int rc = DECLINE;
    Rec *recs = arena_alloc(&ar, sizeof(Rec) * (size_t)nrec);
    JVal *docs = arena_alloc(&ar, sizeof(JVal) * (size_t)nrec);
    if (!recs || !docs) goto out;
    for (Py_ssize_t r = 0; r < nrec; r++) {
        PyObject *pair = PyList_GET_ITEM(args[1], r);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            goto out;
        PyObject *blob = PyTuple_GET_ITEM(pair, 1);
        recs[r].prio = PyLong_AsLongLong(PyTuple_GET_ITEM(pair, 0));
        if (recs[r].prio == -1 && PyErr_Occurred()) {
            rc = -1;
            goto out;
        }
        if (jp_parse(&jp, PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob), &docs[r]) < 0 ||
            docs[r].n != N_RECORD_FIELDS || fields(&docs[r], RECORD_FIELDS, N_RECORD_FIELDS, recs[r].f) < 0)
            goto out;
        JV *f = recs[r].f;
        if (f[R_ALIASES]->t != J_ARR || f[R_AFFECTED]->t != J_ARR || f[R_CVSS]->t != J_ARR ||
            f[R_CWES]->t != J_ARR || f[R_REFERENCES]->t != J_ARR || f[R_PROVENANCE]->t != J_ARR ||
            f[R_PROVENANCE]->n < 1 || ITEM(f[R_PROVENANCE], 0)->t != J_OBJ)
            goto out;
        JV prov = ITEM(f[R_PROVENANCE], 0);
        if (req_str(f[R_KEY], &recs[r].key) < 0 || req_str(member(prov, "documentId"), &recs[r].doc_id) < 0 ||
            req_str(member(prov, "digest"), &recs[r].digest) < 0)
            goto out;
    }
    rc = merge_records(&ar, &b, &key, recs, nrec);
out:;
    PyObject *result = rc == 0 ? PyBytes_FromStringAndSize(b.p, b.len) : NULL;
    arena_free(&ar);
    jp_free(&jp);
    PyMem_Free(b.p);
    if (rc == DECLINE) Py_RETURN_NONE;
    return result;
}


/* ---- counting a source's files (export._count_files) ------------------------------------------ */


/* Regular files below dir (names starting with "." skipped, symbolic links not followed), or -1. */
static long long count_tree(int dirfd_, int depth) {
    if (depth > 256) return -1;
    DIR *d = fdopendir(dirfd_);
    if (!d) {
        close(dirfd_);
        return -1;
    }
    long long n = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) { /* some file systems do not say: ask */
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                n = -1;
                break;
            }
            type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        }
        if (type == DT_REG) {
            n++;
        } else if (type == DT_DIR) {
            int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            long long m = sub < 0 ? -1 : count_tree(sub, depth + 1);
            if (m < 0) {
                n = -1;
                break;
            }
            n += m;
        }
        errno = 0;
    }
    if (n >= 0 && errno) n = -1;
    closedir(d);
    return n;
}

PyDoc_STRVAR(count_files_doc, "count_files(path) -> int | None\n\n"
                              "Regular files below a folder (names starting with '.' skipped, symbolic links\n"
                              "not followed), as export._count_files counts them; None when a folder cannot be\n"
                              "read (the caller's own walk then reports it).");

static PyObject *count_files(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *fs = NULL;
    if (!PyUnicode_FSConverter(arg, &fs)) return NULL;
    long long n;
    Py_BEGIN_ALLOW_THREADS
    int fd = open(PyBytes_AS_STRING(fs), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    n = fd < 0 ? -1 : count_tree(fd, 0);
    Py_END_ALLOW_THREADS
    Py_DECREF(fs);
    if (n < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(n);
}

PyDoc_STRVAR(configure_doc, "configure(cvss, purl, severity_word, sha256) -> None\n\n"
                            "The Python helpers entry() calls (see osv_fast).");

static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "configure() takes exactly 4 arguments");
        return NULL;
    }
    PyObject **slots[] = {&cvss_fn, &purl_fn, &severity_fn, &sha256_fn};
    for (int i = 0; i < 4; i++) {
        if (!PyCallable_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "configure() takes callables");
            return NULL;
        }
    }
    for (int i = 0; i < 4; i++) {
        Py_INCREF(args[i]);
        Py_XSETREF(*slots[i], args[i]);
    }
    PyDict_Clear(purl_memo); /* answers of the previous helpers */
    PyDict_Clear(cvss_memo);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"entry", (PyCFunction)(void (*)(void))entry, METH_FASTCALL, entry_doc},
    {"stage", (PyCFunction)(void (*)(void))stage, METH_FASTCALL, stage_doc},
    {"stage_files", (PyCFunction)(void (*)(void))stage_files, METH_FASTCALL, stage_files_doc},
    {"merge", (PyCFunction)(void (*)(void))merge_entry, METH_FASTCALL, merge_doc},
    {"count_files", (PyCFunction)count_files, METH_O, count_files_doc},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_osvc", "The OSV fast path in C (see osv_fast).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__osvc(void) {
    init_escape_table();
    init_crc_table();
    ONE = PyLong_FromLong(1);
    purl_memo = PyDict_New();
    cvss_memo = PyDict_New();
    if (!ONE || !purl_memo || !cvss_memo) return NULL;
    return PyModule_Create(&module);
}
