/* An OSV document's tree -> the canonical bytes of its single-record advisory (entry).
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

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
    out->raw = v->raw;
}

/* An optional str field: absent or null → s = NULL; a str → its UTF-8; anything else → -1. */
static int opt_str(JV v, Str *out) {
    *out = (Str){NULL, NULL, 0, 0};
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
    Str score; /* the text of baseScore (s == NULL: null) */
    Str vector, version;
} Cvss;

typedef struct {
    Str type, url;
} Ref;

static int cmp_opt(const Str *a, const Str *b) {
    /* None sorts as "" (fast_entry's keys use ``x or ""``; empty strings are declined). */
    static const Str empty = {NULL, "", 0, 0};
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

/* merge.merge_affected's ranges (and _out_ranges'): unique ({key: r} keeps the last of equal keys;
 * equal keys mean equal ranges here, as empty strings are declined), sorted, a bare "fixed" dropped
 * beside a range that ends there. Returns the count kept. */
static Py_ssize_t normalize_ranges(Range *rs, Py_ssize_t n) {
    if (n < 2) return n;
    sort_ranges(rs, n);
    Py_ssize_t u = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (u == 0 || range_cmp(&rs[u - 1], &rs[i]) != 0) rs[u++] = rs[i];
    n = u;
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Range *r = &rs[i];
        int drop = 0;
        if (!r->introduced.s && !r->last.s && r->fixed.s)
            for (Py_ssize_t j = 0; j < n && !drop; j++)
                if (rs[j].introduced.s && rs[j].fixed.s && str_cmp(&rs[j].fixed, &r->fixed) == 0) drop = 1;
        if (!drop) rs[kept++] = *r;
    }
    return kept;
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
        Str current = {NULL, NULL, 0, 0}; /* the ``introduced`` of the open range */
        int open = 0;
        JV events = v[1];
        for (Py_ssize_t e = 0; e < events->n; e++) {
            JV ev = ITEM(events, e);
            if (ev->t != J_OBJ || ev->n != 1) return DECLINE;
            int kind = event_kind(&ev->u.mem[0]);
            Str value;
            if (kind < 0 || req_str(&ev->u.mem[0].v, &value) < 0 || value.n == 0) return DECLINE;
            Range *o = &rs[n];
            Str none = {NULL, NULL, 0, 0};
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
            Str none = {NULL, NULL, 0, 0};
            rs[n++] = (Range){none, current, none, type};
        }
    }
    n = normalize_ranges(rs, n);
    *out = rs;
    *nout = n;
    return 0;
}

/* purl_fn(ecosystem, name, purl) → str | None, or False: decline (remembered in purl_memo). */
static int package_purl(Arena *ar, Str *eco, Str *name, Str *purl, Str *out) {
    Buf key = {NULL, 0, 0};
    if (key_part(&key, eco->s, eco->n) || key_part(&key, name->s, name->n) || key_part(&key, purl->s, purl->n)) {
        PyMem_Free(key.p);
        return -1;
    }
    MemoSlot *e = memo_get(&purl_memo, key.p, key.len);
    if (!e) {
        PyObject *args[3] = {str_obj(ar, eco), str_obj(ar, name), purl->s ? str_obj(ar, purl) : Py_None};
        PyObject *res = args[0] && args[1] && args[2] ? PyObject_Vectorcall(purl_fn, args, 3, NULL) : NULL;
        e = res ? memo_put(&purl_memo, key.p, key.len, res, NULL) : NULL;
        if (!e) {
            PyMem_Free(key.p);
            return args[0] && args[1] && args[2] ? -1 : OBJ_FAILED();
        }
    }
    PyMem_Free(key.p);
    PyObject *res = e->val;
    if (res == Py_False) return DECLINE;
    if (res == Py_None) {
        *out = (Str){NULL, NULL, 0, 0};
        return 0;
    }
    /* the memo may be cleared before this document is written: keep the str alive with the arena */
    if (!PyUnicode_CheckExact(res) || arena_own(ar, Py_NewRef(res)) < 0 || utf8(res, out) < 0 || out->n == 0)
        return DECLINE;
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

/* cvss_fn(type, score) → None (decline), () (a type that is ignored) or (baseScore, vector, version, v3score),
 * remembered in cvss_memo with the text of baseScore (repr: the shortest round trip, as orjson and
 * msgspec write floats; tests check it). */
static int out_cvss(Arena *ar, JV list, Cvss **out, Py_ssize_t *nout, PyObject **best) {
    static const char *const SEVERITY_FIELDS[] = {"type", "score"};
    Py_ssize_t n = list->n, k = 0;
    Cvss *cs = arena_alloc(ar, sizeof(Cvss) * (size_t)(n ? n : 1));
    if (!cs) return DECLINE;
    double best_score = -1.0;
    *best = NULL;
    Buf key = {NULL, 0, 0};
    int rc = DECLINE;
    for (Py_ssize_t i = 0; i < n; i++) {
        JV s = ITEM(list, i), v[2];
        if (s->t != J_OBJ || fields(s, SEVERITY_FIELDS, 2, v) < 0) goto out;
        Str type, score;
        if (req_str(v[0], &type) < 0 || req_str(v[1], &score) < 0) goto out;
        key.len = 0;
        if (key_part(&key, type.s, type.n) || key_part(&key, score.s, score.n)) {
            rc = -1;
            goto out;
        }
        MemoSlot *e = memo_get(&cvss_memo, key.p, key.len);
        if (!e) {
            PyObject *args[2] = {str_obj(ar, &type), str_obj(ar, &score)};
            if (!args[0] || !args[1]) {
                rc = OBJ_FAILED();
                goto out;
            }
            PyObject *res = PyObject_Vectorcall(cvss_fn, args, 2, NULL), *text = NULL;
            if (!res) {
                rc = -1;
                goto out;
            }
            if (PyTuple_CheckExact(res) && PyTuple_GET_SIZE(res) == 4 && PyTuple_GET_ITEM(res, 0) != Py_None &&
                !(text = PyObject_Repr(PyTuple_GET_ITEM(res, 0)))) {
                Py_DECREF(res);
                rc = -1;
                goto out;
            }
            if (!(e = memo_put(&cvss_memo, key.p, key.len, res, text))) {
                rc = -1;
                goto out;
            }
        }
        PyObject *res = e->val;
        if (!PyTuple_CheckExact(res)) goto out;
        if (PyTuple_GET_SIZE(res) == 0) continue;
        if (PyTuple_GET_SIZE(res) != 4) goto out;
        /* the memo may be cleared before this document is written: keep the answer alive with the arena */
        if (arena_own(ar, Py_NewRef(res)) < 0 || (e->aux && arena_own(ar, Py_NewRef(e->aux)) < 0)) goto out;
        Cvss *c = &cs[k];
        c->score = (Str){NULL, NULL, 0, 0};
        if ((e->aux && utf8(e->aux, &c->score) < 0) || utf8(PyTuple_GET_ITEM(res, 1), &c->vector) < 0 ||
            utf8(PyTuple_GET_ITEM(res, 2), &c->version) < 0)
            goto out;
        PyObject *v3 = PyTuple_GET_ITEM(res, 3);
        if (v3 != Py_None) {
            double d = PyFloat_AsDouble(v3);
            if (d == -1.0 && PyErr_Occurred()) {
                rc = -1;
                goto out;
            }
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
    rc = 0;
out:
    PyMem_Free(key.p);
    return rc;
}

/* Text written as it is (a number's JSON), or null. */
static int put_opt_raw(Buf *b, const Str *s) { return s->s ? buf_put(b, s->s, s->n) : PUT(b, "null"); }

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
    out->raw = 0;
}

/* severity_word: 0 with *out set (s NULL: unknown word), DECLINE, -1 with an exception. */
static int severity_word(Arena *ar, Str *w, Str *out) {
    static const char *const WORDS[][2] = {{"none", "none"},   {"low", "low"},     {"moderate", "medium"},
                                           {"medium", "medium"}, {"important", "high"}, {"high", "high"},
                                           {"critical", "critical"}};
    *out = (Str){NULL, NULL, 0, 0};
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
    if (out->n == 20 && memcmp(out->s, "0001-01-01T00:00:00Z", 20) == 0) *out = (Str){NULL, NULL, 0, 0};
    return 0;
}

/* What build() found besides the canonical bytes (borrowed references, valid while the document lives). */
typedef struct {
    Str key;        /* the advisory key: the lowest CVE, else the id */
    Str *ids;       /* every id, sorted and unique (arena memory) */
    Py_ssize_t nids;
    Py_ssize_t low; /* the index of the lowest CVE in ids, or -1 */
    Str modified;   /* ``modified`` (s == NULL when absent): the record's recordedAt */
} Built;

/* The canonical bytes of a document into b: 0 with *out filled, DECLINE, or -1 with an exception. */
static int build(Arena *ar, Buf *b, JV doc, const Str *src, const Str *dig, Built *out) {
    JV f[N_DOC_FIELDS];
    if (doc->t != J_OBJ || fields(doc, DOC_FIELDS, N_DOC_FIELDS, f) < 0) return DECLINE;
    Str id, modified, published, withdrawn, summary, details;
    if (req_str(f[F_ID], &id) < 0 || id.n == 0) return DECLINE;
    Str stripped = id;
    if (strip_str(&stripped) < 0 || stripped.n != id.n) return DECLINE; /* rare: the exact reader strips it */
    if (time_field(f[F_MODIFIED], 1, &modified) || time_field(f[F_PUBLISHED], 0, &published) ||
        time_field(f[F_WITHDRAWN], 0, &withdrawn))
        return DECLINE;
    if (opt_str(f[F_SUMMARY], &summary) < 0 || opt_str(f[F_DETAILS], &details) < 0) return DECLINE;
    if (summary.s && summary.n == 0) summary.s = NULL; /* ``or None`` */
    if (details.s && details.n == 0) details.s = NULL;

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
    Str word = {NULL, NULL, 0, 0};
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
    Str sev = {NULL, NULL, 0, 0};
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
        if ((i && PUT(b, ",")) || PUT(b, "{\"baseScore\":") || put_opt_raw(b, &cvss[i].score) || PUT(b, ",\"vector\":") ||
            put_pystr(b, &cvss[i].vector) || PUT(b, ",\"version\":") || put_pystr(b, &cvss[i].version) || PUT(b, "}"))
            return -1;
    }
    if (PUT(b, "],\"cwes\":") || put_str_list(b, cwes, ncwes) || PUT(b, ",\"description\":") ||
        put_opt(b, &details) || PUT(b, ",\"modified\":") || put_opt(b, &modified) ||
        PUT(b, ",\"provenance\":[{\"digest\":") || put_pystr(b, dig) || PUT(b, ",\"documentId\":") ||
        put_pystr(b, &id) || PUT(b, ",\"recordedAt\":") || put_opt(b, &modified) || PUT(b, ",\"source\":") ||
        put_pystr(b, src) || PUT(b, "}],\"published\":") || put_opt(b, &published) || PUT(b, ",\"references\":["))
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
    out->low = low;
    out->modified = modified;
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
    Str src, dig;
    int rc = utf8(args[1], &src) < 0 || utf8(args[2], &dig) < 0 || jp_parse(&jp, data.buf, data.len, &doc) < 0
                 ? DECLINE
                 : build(&ar, &b, &doc, &src, &dig, &got);
    if (rc == 0) { /* the ids, key, CVE and recordedAt as str */
        PyObject *id_list = PyList_New(got.nids);
        Py_ssize_t own = got.low >= 0 ? got.low : 0;
        for (Py_ssize_t i = 0; id_list && i < got.nids; i++) {
            PyObject *o = PyUnicode_DecodeUTF8(got.ids[i].s, got.ids[i].n, NULL);
            if (!o) Py_CLEAR(id_list);
            else PyList_SET_ITEM(id_list, i, o);
            if (got.low < 0 && str_cmp(&got.ids[i], &got.key) == 0) own = i;
        }
        PyObject *recorded = !id_list ? NULL
                             : got.modified.s ? PyUnicode_DecodeUTF8(got.modified.s, got.modified.n, NULL)
                                              : Py_NewRef(Py_None);
        if (recorded) {
            PyObject *key = PyList_GET_ITEM(id_list, own), *cve = got.low >= 0 ? key : Py_None;
            result = Py_BuildValue("(y#OOON)", b.p, b.len, key, id_list, cve, recorded);
        }
        Py_XDECREF(id_list);
    }
    arena_free(&ar);
    jp_free(&jp);
    PyBuffer_Release(&data);
    PyMem_Free(b.p);
    if (rc == DECLINE) Py_RETURN_NONE;
    return result; /* NULL with an exception when rc < 0 or building the tuple failed */
}
