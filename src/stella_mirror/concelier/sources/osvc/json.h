/* A strict JSON reader into a small C tree.
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

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
    int raw; /* a string written without escapes: nothing in it needs escaping when written again */
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

/* Ready for the next document, keeping the first block of node memory (staging reads thousands of
 * documents in a row; each would otherwise allocate and free its own). */
static void jp_reset(JP *jp) {
    JChunk *keep = NULL;
    for (JChunk *c = jp->chunks, *next; c; c = next) {
        next = c->next;
        if (!next && c->cap == 16384) {
            keep = c;
        } else {
            PyMem_Free(c);
        }
    }
    if (keep) keep->used = 0;
    jp->chunks = keep;
    jp->nvals = jp->nmems = 0;
    jp->depth = 0;
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

/* A string at jp->p (its opening quote): 0 with *s, *n (into the input when nothing is escaped) and
 * *raw (1: nothing was escaped), or -1. */
static int jp_string(JP *jp, const char **s, Py_ssize_t *n, int *raw) {
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
    *raw = !escaped;
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
            int key_raw;
            jp_ws(jp);
            if (jp->p >= jp->end || *jp->p != '"' || jp_string(jp, &m.k, &m.kn, &key_raw) < 0) return -1;
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
    case '"': v->t = J_STR; return jp_string(jp, &v->u.s, &v->n, &v->raw);
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
