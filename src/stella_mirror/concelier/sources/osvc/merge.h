/* merge.merge for two or more staged records (merge).
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

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
    case J_STR: {
        Str s = {NULL, v->u.s, v->n, v->raw};
        return put_pystr(b, &s);
    }
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
                Str prev = {NULL, v->u.mem[i - 1].k, v->u.mem[i - 1].kn, 0}, cur = {NULL, m->k, m->kn, 0};
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
    Str px = {NULL, x, n[0], 0}, py = {NULL, y, n[1], 0};
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
    Str firsts[3] = {{NULL, NULL, 0, 0}, {NULL, NULL, 0, 0}, {NULL, NULL, 0, 0}};
    const int first_fields[3] = {R_TITLE, R_SUMMARY, R_DESCRIPTION};
    for (int f = 0; f < 3; f++)
        for (Py_ssize_t r = 0; r < nrec && !firsts[f].s; r++) {
            Str v;
            if (str_or_null(recs[r].f[first_fields[f]], &v) < 0) return DECLINE;
            if (v.s && v.n) firsts[f] = v;
        }

    /* published: earliest; modified: latest; withdrawn: latest, only when every record is withdrawn */
    Str published = {NULL, NULL, 0, 0}, modified = {NULL, NULL, 0, 0}, withdrawn = {NULL, NULL, 0, 0};
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
    Str severity = {NULL, NULL, 0, 0};
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
                    *ks[j] = (Str){NULL, "", 0, 0};
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
            if (!k->k3.s) k->k3 = (Str){NULL, "", 0, 0};
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
        n = normalize_ranges(rs, n);
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
