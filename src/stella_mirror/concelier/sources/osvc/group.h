/* The union-find, chains and key pass of grouping.group, over its arrays (join_pairs, chains, group_keys).
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

/* A writable int32 buffer (array("i")) of at least n items, or -1 with an exception. */
static int int_buffer(PyObject *o, Py_buffer *view, Py_ssize_t min_items, int writable) {
    if (PyObject_GetBuffer(o, view, writable ? PyBUF_WRITABLE | PyBUF_FORMAT : PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != 4 || !view->format || strcmp(view->format, "i") != 0 || view->len / 4 < min_items) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "expected array('i') buffers of the right size");
        return -1;
    }
    return 0;
}

static int32_t uf_find(int32_t *parent, int32_t i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]]; /* path halving, as grouping.RecordUnion.find */
        i = parent[i];
    }
    return i;
}

PyDoc_STRVAR(join_pairs_doc, "join_pairs(parent, rank, pairs) -> None\n\n"
                             "RecordUnion.union(a, g) for every pair a, g of the array('i') pairs, on the\n"
                             "union-find's arrays (parent: array('i'), rank: array('B')).");

static PyObject *join_pairs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "join_pairs() takes exactly 3 arguments");
        return NULL;
    }
    Py_buffer pv, rv, qv;
    if (int_buffer(args[0], &pv, 0, 1) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &rv, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    if (int_buffer(args[2], &qv, 0, 0) < 0) {
        PyBuffer_Release(&pv);
        PyBuffer_Release(&rv);
        return NULL;
    }
    int32_t *parent = pv.buf, *pairs = qv.buf;
    unsigned char *rank = rv.buf;
    Py_ssize_t n = pv.len / 4, np = qv.len / 4;
    int bad = rv.len < n || np % 2;
    for (Py_ssize_t i = 0; !bad && i < np; i += 2) {
        int32_t a = pairs[i], b = pairs[i + 1];
        if (a < 0 || b < 0 || a >= n || b >= n) {
            bad = 1;
            break;
        }
        int32_t ra = uf_find(parent, a), rb = uf_find(parent, b);
        if (ra == rb) continue;
        if (rank[ra] < rank[rb]) {
            int32_t t = ra;
            ra = rb;
            rb = t;
        }
        parent[rb] = ra;
        if (rank[ra] == rank[rb] && rank[ra] < 255) rank[ra]++;
    }
    PyBuffer_Release(&pv);
    PyBuffer_Release(&rv);
    PyBuffer_Release(&qv);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "join_pairs(): pairs outside the union-find, or arrays of unequal size");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(chains_doc, "chains(parent, head, nxt) -> None\n\n"
                         "grouping.group's chains: parent fully compressed (each record's representative),\n"
                         "each record linked to the next of its group (head/nxt, -1 ends a chain).");

static PyObject *chains(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "chains() takes exactly 3 arguments");
        return NULL;
    }
    Py_buffer pv, hv, nv;
    if (int_buffer(args[0], &pv, 0, 1) < 0) return NULL;
    Py_ssize_t n = pv.len / 4;
    if (int_buffer(args[1], &hv, n, 1) < 0) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    if (int_buffer(args[2], &nv, n, 1) < 0) {
        PyBuffer_Release(&pv);
        PyBuffer_Release(&hv);
        return NULL;
    }
    int32_t *parent = pv.buf, *head = hv.buf, *nxt = nv.buf;
    int bad = 0;
    for (Py_ssize_t g = 0; g < n && !bad; g++)
        if (parent[g] < 0 || parent[g] >= n) bad = 1;
    for (Py_ssize_t g = 0; g < n && !bad; g++) {
        int32_t r = uf_find(parent, (int32_t)g);
        parent[g] = r;
        nxt[g] = head[r];
        head[r] = (int32_t)g;
    }
    PyBuffer_Release(&pv);
    PyBuffer_Release(&hv);
    PyBuffer_Release(&nv);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "chains(): a parent outside the union-find");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(group_keys_doc,
             "group_keys(items, base, parent, head, nxt, singles, multi, better_cve) -> None\n\n"
             "grouping.group's key pass over one key line: items = [lowestCve|None, ownKey, ...] of records\n"
             "base, base + 1, ...; a record alone in its group appends (key, record, key == ownKey) to\n"
             "singles; a group of several keeps its best CVE in multi[representative] (better_cve).");

static PyObject *group_keys(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 8 || !PyList_CheckExact(args[0]) || !PyLong_CheckExact(args[1]) || !PyList_CheckExact(args[5]) ||
        !PyDict_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError, "group_keys(): wrong arguments");
        return NULL;
    }
    PyObject *items = args[0], *singles = args[5], *multi = args[6], *better = args[7];
    Py_ssize_t base = PyLong_AsSsize_t(args[1]), count = PyList_GET_SIZE(items) / 2;
    if (base < 0 && PyErr_Occurred()) return NULL;
    Py_buffer pv, hv, nv;
    if (int_buffer(args[2], &pv, 0, 0) < 0) return NULL;
    Py_ssize_t n = pv.len / 4;
    if (int_buffer(args[3], &hv, n, 0) < 0) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    if (int_buffer(args[4], &nv, n, 0) < 0) {
        PyBuffer_Release(&pv);
        PyBuffer_Release(&hv);
        return NULL;
    }
    const int32_t *parent = pv.buf, *head = hv.buf, *nxt = nv.buf;
    int failed = PyList_GET_SIZE(items) % 2 || base < 0 || base + count > n;
    if (failed) PyErr_SetString(PyExc_ValueError, "group_keys(): key items outside the records");
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        Py_ssize_t g = base + i;
        PyObject *cve = PyList_GET_ITEM(items, 2 * i), *own = PyList_GET_ITEM(items, 2 * i + 1);
        int32_t r = parent[g];
        if (r < 0 || r >= n) {
            PyErr_SetString(PyExc_ValueError, "group_keys(): a parent outside the union-find");
            failed = 1;
            break;
        }
        if (nxt[g] == -1 && head[r] == g) { /* a group of one record */
            int has_cve = PyObject_IsTrue(cve); /* key = cve or own */
            if (has_cve < 0) {
                failed = 1;
                break;
            }
            PyObject *key = has_cve ? cve : own;
            int same = key == own ? 1 : PyObject_RichCompareBool(key, own, Py_EQ);
            PyObject *gi = same < 0 ? NULL : PyLong_FromSsize_t(g);
            PyObject *t = gi ? PyTuple_Pack(3, key, gi, same ? Py_True : Py_False) : NULL;
            Py_XDECREF(gi);
            if (!t || PyList_Append(singles, t) < 0) failed = 1;
            Py_XDECREF(t);
            continue;
        }
        PyObject *ri = PyLong_FromLong(r);
        if (!ri) {
            failed = 1;
            break;
        }
        PyObject *current = PyDict_GetItemWithError(multi, ri); /* borrowed */
        if (!current && PyErr_Occurred()) {
            failed = 1;
        } else if (cve != Py_None) {
            PyObject *best;
            if (current == NULL || current == Py_None) {
                Py_INCREF(cve);
                best = cve;
            } else {
                int same = PyObject_RichCompareBool(current, cve, Py_EQ);
                if (same < 0) {
                    best = NULL;
                } else if (same) {
                    Py_INCREF(current);
                    best = current;
                } else {
                    best = PyObject_CallFunctionObjArgs(better, current, cve, NULL);
                }
            }
            if (!best || PyDict_SetItem(multi, ri, best) < 0) failed = 1;
            Py_XDECREF(best);
        } else if (!current && PyDict_SetItem(multi, ri, Py_None) < 0) {
            failed = 1;
        }
        Py_DECREF(ri);
    }
    PyBuffer_Release(&pv);
    PyBuffer_Release(&hv);
    PyBuffer_Release(&nv);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

/* ---- the pairs of one alias bucket (staging.alias_pairs) ----------------------------------------- */

typedef struct {
    const char *s;
    Py_ssize_t n;
    int32_t owner;
    uint32_t slot; /* the alias's slot in alias_pairs' table */
} AliasRef;

/* One staged alias line "[k,\"alias\",k,\"alias\",…]" into refs (k + base); -1: not that shape. */
static int alias_line(JP *jp, const char *line, Py_ssize_t n, long long base, AliasRef **refs, Py_ssize_t *nrefs,
                      Py_ssize_t *cap) {
    JVal v;
    jp->p = (const unsigned char *)line;
    jp->end = jp->p + n;
    if (jp_value(jp, &v) < 0 || v.t != J_ARR || v.n % 2) return -1;
    jp_ws(jp);
    if (jp->p != jp->end) return -1;
    for (Py_ssize_t i = 0; i < v.n; i += 2) {
        JVal *k = &v.u.items[i], *a = &v.u.items[i + 1];
        if (k->t != J_NUM || a->t != J_STR || k->n > 10) return -1;
        long long rec = 0;
        for (Py_ssize_t j = 0; j < k->n; j++) {
            char c = k->u.s[j];
            if (c < '0' || c > '9') return -1; /* no sign, no fraction: a record index */
            rec = rec * 10 + (c - '0');
        }
        rec += base;
        if (rec > INT32_MAX) return -1;
        if (*nrefs == *cap) {
            Py_ssize_t grown = *cap ? *cap * 2 : 4096;
            AliasRef *more = PyMem_Realloc(*refs, sizeof(AliasRef) * (size_t)grown);
            if (!more) return -1;
            *refs = more;
            *cap = grown;
        }
        (*refs)[(*nrefs)++] = (AliasRef){a->u.s, a->n, (int32_t)rec, 0};
    }
    return 0;
}

PyDoc_STRVAR(alias_pairs_doc,
             "alias_pairs(files) -> bytes | None\n\n"
             "staging.alias_pairs of one bucket's files ((first record index, path) each): the pairs a, g as\n"
             "native int32, in the same order; None when a file cannot be read or a line is not what staging\n"
             "writes (the Python version then decides).");

static PyObject *alias_pairs(PyObject *self, PyObject *files) {
    (void)self;
    if (!PyList_CheckExact(files)) {
        PyErr_SetString(PyExc_TypeError, "alias_pairs() takes a list of (base, path)");
        return NULL;
    }
    Py_ssize_t nf = PyList_GET_SIZE(files);
    char **datas = PyMem_Calloc((size_t)(nf ? nf : 1), sizeof(char *));
    JP jp;
    memset(&jp, 0, sizeof(jp));
    AliasRef *refs = NULL;
    Py_ssize_t nrefs = 0, cap = 0;
    size_t tcap = 0;
    int32_t *table = NULL; /* index into refs of each alias's last occurrence, -1: empty */
    Buf out = {NULL, 0, 0};
    PyObject *result = NULL;
    int ok = datas != NULL;
    for (Py_ssize_t f = 0; ok && f < nf; f++) {
        PyObject *item = PyList_GET_ITEM(files, f), *fs = NULL;
        long long base;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || (base = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 0))) < 0 ||
            !PyUnicode_FSConverter(PyTuple_GET_ITEM(item, 1), &fs)) {
            PyErr_Clear();
            ok = 0;
            break;
        }
        int fd = open(PyBytes_AS_STRING(fs), O_RDONLY | O_CLOEXEC);
        Py_DECREF(fs);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !(datas[f] = PyMem_Malloc((size_t)st.st_size + 1))) {
            if (fd >= 0) close(fd);
            ok = 0;
            break;
        }
        Py_ssize_t got = 0;
        while (got < st.st_size) {
            ssize_t r = read(fd, datas[f] + got, (size_t)(st.st_size - got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            got += r;
        }
        close(fd);
        if (got != st.st_size) {
            ok = 0;
            break;
        }
        for (Py_ssize_t at = 0; ok && at < got;) { /* one JSON list per line */
            const char *nl = memchr(datas[f] + at, '\n', (size_t)(got - at));
            Py_ssize_t end = nl ? nl - datas[f] : got;
            if (end > at && alias_line(&jp, datas[f] + at, end - at, base, &refs, &nrefs, &cap) < 0) ok = 0;
            at = end + 1;
        }
    }
    if (ok) { /* every alias to its last occurrence, as dict(zip(names, owners)) keeps it */
        tcap = 1024;
        while (tcap < (size_t)nrefs * 2) tcap *= 2;
        table = PyMem_Malloc(tcap * sizeof(int32_t));
        if (!table || nrefs > INT32_MAX) ok = 0;
    }
    if (ok) {
        memset(table, 0xff, tcap * sizeof(int32_t));
        for (Py_ssize_t i = 0; i < nrefs; i++) {
            size_t h = (size_t)memo_hash(refs[i].s, refs[i].n) & (tcap - 1);
            while (table[h] >= 0) {
                AliasRef *o = &refs[table[h]];
                if (o->n == refs[i].n && memcmp(o->s, refs[i].s, (size_t)o->n) == 0) break;
                h = (h + 1) & (tcap - 1);
            }
            table[h] = (int32_t)i;
            refs[i].slot = (uint32_t)h; /* the second pass looks the alias up again by its slot */
        }
        for (Py_ssize_t i = 0; ok && i < nrefs; i++) { /* the pairs, in order: (canonical owner, owner) where they differ */
            int32_t pair[2] = {refs[table[refs[i].slot]].owner, refs[i].owner};
            if (pair[0] != pair[1] && buf_put(&out, (const char *)pair, 8) < 0) ok = 0;
        }
    }
    if (ok) result = PyBytes_FromStringAndSize(out.p ? out.p : "", out.len);
    PyMem_Free(out.p);
    PyMem_Free(table);
    PyMem_Free(refs);
    jp_free(&jp);
    for (Py_ssize_t f = 0; datas && f < nf; f++) PyMem_Free(datas[f]);
    PyMem_Free(datas);
    if (!ok && !result) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return result;
}
