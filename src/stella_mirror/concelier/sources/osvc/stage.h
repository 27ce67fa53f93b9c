/* Staging documents where staging.Stager keeps its chunk (stage, stage_files).
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

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

/* The decimal digits of v (as "%llu" writes them) at the end of tmp; returns where they start. Three
 * numbers per staged record: snprintf's format parsing showed at ~1.5 % of a reader's time. */
static char *ull_digits(unsigned long long v, char tmp[32]) {
    char *o = tmp + 32;
    do {
        *--o = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return o;
}

static int put_ll(Buf *b, long long v) {
    char tmp[32];
    char *o = ull_digits(v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, tmp);
    if (v < 0) *--o = '-';
    return buf_put(b, o, tmp + 32 - o);
}

static int append_bytes(PyObject *ba, const char *s, Py_ssize_t n) {
    Py_ssize_t old = PyByteArray_GET_SIZE(ba);
    if (PyByteArray_Resize(ba, old + n) < 0) return -1;
    memcpy(PyByteArray_AS_STRING(ba) + old, s, (size_t)n);
    return 0;
}

/* tally[(mask, source)]: [records, latest recordedAt] += count records whose latest recordedAt is
 * recorded (None: none has one) — staging._bump. */
static int tally_add(PyObject *tally, PyObject *mask, PyObject *source, Py_ssize_t count, PyObject *recorded) {
    PyObject *key = PyTuple_Pack(2, mask, source);
    if (!key) return -1;
    PyObject *slot = PyDict_GetItemWithError(tally, key);
    int rc = -1;
    if (slot == NULL) {
        if (PyErr_Occurred()) goto done;
        PyObject *n = PyLong_FromSsize_t(count);
        PyObject *fresh = n ? PyList_New(2) : NULL;
        if (!fresh) {
            Py_XDECREF(n);
            goto done;
        }
        PyList_SET_ITEM(fresh, 0, n);
        PyList_SET_ITEM(fresh, 1, Py_NewRef(recorded));
        rc = PyDict_SetItem(tally, key, fresh);
        Py_DECREF(fresh);
        goto done;
    }
    if (!PyList_CheckExact(slot) || PyList_GET_SIZE(slot) != 2) {
        PyErr_SetString(PyExc_TypeError, "tally slots must be [count, recordedAt] lists");
        goto done;
    }
    PyObject *n = PyLong_FromSsize_t(count);
    PyObject *sum = n ? PyNumber_Add(PyList_GET_ITEM(slot, 0), n) : NULL;
    Py_XDECREF(n);
    if (!sum) goto done;
    PyList_SetItem(slot, 0, sum); /* steals sum */
    PyObject *last = PyList_GET_ITEM(slot, 1);
    if (recorded != Py_None) {
        int newer = last == Py_None ? 1 : PyUnicode_Compare(recorded, last) > 0;
        if (newer < 0 && PyErr_Occurred()) goto done;
        if (newer) PyList_SetItem(slot, 1, Py_NewRef(recorded));
    }
    rc = 0;
done:
    Py_DECREF(key);
    return rc;
}

/* Where a reader keeps its chunk (staging.Stager), and what every staged record of the chunk shares.
 * keys and each bucket are bytearrays of JSON list items ("item,item,…", no brackets), which flush()
 * writes as one JSON line each, byte for byte what orjson.dumps writes for the list. */
typedef struct {
    PyObject *source, *mask, *rec, *offs, *keys, *buckets, *tally;
    Str src;
    long long prio;
    unsigned long long bits;
    Py_ssize_t nb;
    Py_ssize_t tcount;                /* records counted since tally_flush (all with this mask and source) */
    char tlatest[64];                 /* their latest recordedAt */
    Py_ssize_t tlatest_n;             /* its length, or -1: none had one */
    Buf head, line;                   /* scratch: a record's meta and state lines; a key or bucket item */
} Sink;

/* args: source, priority, mask, rec, offs, keys, buckets, tally */
static int sink_from(Sink *s, PyObject *const *args) {
    memset(s, 0, sizeof(*s));
    s->tlatest_n = -1;
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
        !PyByteArray_CheckExact(s->rec) || !PyByteArray_CheckExact(s->offs) || !PyByteArray_CheckExact(s->keys) ||
        !PyList_CheckExact(s->buckets) || (s->tally != Py_None && !PyDict_CheckExact(s->tally))) {
        PyErr_SetString(PyExc_TypeError, "stage: wrong argument types");
        return -1;
    }
    s->nb = PyList_GET_SIZE(s->buckets);
    if (s->nb < 1 || (s->nb & (s->nb - 1))) {
        PyErr_SetString(PyExc_ValueError, "stage: the number of buckets must be a power of two");
        return -1;
    }
    for (Py_ssize_t b = 0; b < s->nb; b++) {
        if (!PyByteArray_CheckExact(PyList_GET_ITEM(s->buckets, b))) {
            PyErr_SetString(PyExc_TypeError, "stage: buckets must be bytearrays");
            return -1;
        }
    }
    if (utf8(s->source, &s->src) < 0) {
        PyErr_SetString(PyExc_ValueError, "stage: source is not valid UTF-8");
        return -1;
    }
    s->prio = PyLong_AsLongLong(args[1]);
    s->bits = PyLong_AsUnsignedLongLong(s->mask);
    return PyErr_Occurred() ? -1 : 0;
}

/* Count one staged record in the sink's tally (recordedAt: s == NULL when it has none). */
static void tally_note(Sink *s, const Str *recorded) {
    s->tcount++;
    if (!recorded->s) return;
    if (s->tlatest_n >= 0) {
        Str last = {NULL, s->tlatest, s->tlatest_n, 0};
        if (str_cmp(recorded, &last) <= 0) return;
    }
    /* a canonical time (time_field): 20 or 27 bytes */
    memcpy(s->tlatest, recorded->s, (size_t)recorded->n);
    s->tlatest_n = recorded->n;
}

/* Add what tally_note counted to the tally dict (if any); 0, or -1 with an exception. */
static int tally_flush(Sink *s) {
    if (s->tally == Py_None || !s->tcount) return 0;
    PyObject *latest = s->tlatest_n < 0 ? Py_NewRef(Py_None) : PyUnicode_DecodeUTF8(s->tlatest, s->tlatest_n, NULL);
    if (!latest) return -1;
    int rc = tally_add(s->tally, s->mask, s->source, s->tcount, latest);
    Py_DECREF(latest);
    s->tcount = 0;
    s->tlatest_n = -1;
    return rc;
}

/* The sink's tally is flushed; its scratch memory freed. rc passes through (-1 stays -1). */
static int sink_done(Sink *s, int rc) {
    if (rc == 0 && tally_flush(s) < 0) rc = -1;
    PyMem_Free(s->head.p);
    PyMem_Free(s->line.p);
    s->head.p = s->line.p = NULL;
    return rc;
}

/* Append one JSON list item to the bytearray ba ("," first unless it is empty). */
static int append_item(PyObject *ba, const Buf *item) {
    Py_ssize_t old = PyByteArray_GET_SIZE(ba), sep = old ? 1 : 0;
    if (PyByteArray_Resize(ba, old + sep + item->len) < 0) return -1;
    char *o = PyByteArray_AS_STRING(ba) + old;
    if (sep) *o++ = ',';
    memcpy(o, item->p, (size_t)item->len);
    return 0;
}

#define STAGE_DECLINED (-2)

/* Stage one decoded document as record k at offset at: the entry's size, STAGE_DECLINED (nothing
 * appended), or -1 with an exception. dig is the document's "sha256:<hex>". */
static Py_ssize_t stage_one(Sink *s, JV doc, const Str *dig, long long k, long long at) {
    Arena ar;
    ar.n = ar.nowned = 0;
    Buf b = {NULL, 0, 0}, *head = &s->head, *line = &s->line;
    Built got;
    Py_ssize_t result = -1;
    int rc = build(&ar, &b, doc, &s->src, dig, &got);
    if (rc) {
        if (rc == DECLINE) result = STAGE_DECLINED;
        goto out;
    }
    if (got.modified.s && got.modified.n > (Py_ssize_t)sizeof(s->tlatest)) { /* not a canonical time: cannot be */
        result = STAGE_DECLINED;
        goto out;
    }
    char hs[64]; /* the blob's digest */
    if (sha256_hex(b.p, b.len, hs) < 0) goto out;
    /* [digest, mask, [[source, recordedAt]], priority] \n [key, digest] \n — as orjson.dumps writes them */
    char num[32], *digits = ull_digits(s->bits, num);
    head->len = 0;
    if (PUT(head, "[\"sha256:") || buf_put(head, hs, 64) || PUT(head, "\",") || buf_put(head, digits, num + 32 - digits) ||
        PUT(head, ",[[") || put_pystr(head, &s->src) || PUT(head, ",") || put_opt(head, &got.modified) ||
        PUT(head, "]],") || put_ll(head, s->prio) || PUT(head, "]\n[") || put_pystr(head, &got.key) ||
        PUT(head, ",\"sha256:") || buf_put(head, hs, 64) || PUT(head, "\"]\n"))
        goto out;
    int64_t at64 = (int64_t)at;
    if (append_bytes(s->rec, head->p, head->len) || append_bytes(s->rec, b.p, b.len) ||
        append_bytes(s->offs, (const char *)&at64, 8))
        goto out;
    /* the key candidates: lowest CVE (or null), own key */
    line->len = 0;
    if ((got.low >= 0 ? put_pystr(line, &got.ids[got.low]) : PUT(line, "null")) || PUT(line, ",") ||
        put_pystr(line, &got.key) || append_item(s->keys, line))
        goto out;
    for (Py_ssize_t i = 0; i < got.nids; i++) { /* (k, alias) into the alias's bucket */
        uint32_t bucket_no = crc32_of(got.ids[i].s, got.ids[i].n) & (uint32_t)(s->nb - 1);
        line->len = 0;
        if (put_ll(line, k) || PUT(line, ",") || put_pystr(line, &got.ids[i]) ||
            append_item(PyList_GET_ITEM(s->buckets, (Py_ssize_t)bucket_no), line))
            goto out;
    }
    if (s->tally != Py_None) tally_note(s, &got.modified);
    result = head->len + b.len;
out:
    arena_free(&ar);
    PyMem_Free(b.p);
    return result;
}

PyDoc_STRVAR(stage_doc,
             "stage(data, digest, k, pos, source, priority, mask, rec, offs, keys, buckets, tally) -> int | None\n\n"
             "Stager.add_entry(entry(doc, source, digest), ...) in one step: appends the staged entry (meta\n"
             "line, state line, canonical bytes) to the bytearray rec, its offset pos (int64) to offs, the\n"
             "key candidates to the bytearray keys, (k, alias) to the bytearray buckets[crc32(alias) %\n"
             "len(buckets)] (JSON list items, comma-separated), counts the record in tally (a dict, or None);\n"
             "returns the entry's length, or None (nothing appended): decline.");

static PyObject *stage(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Sink sink;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "stage() takes exactly 12 arguments");
        return NULL;
    }
    if (sink_from(&sink, args + 4) < 0) return NULL;
    Str dig;
    if (!PyUnicode_CheckExact(args[1]) || !PyLong_CheckExact(args[2]) || !PyLong_CheckExact(args[3]) ||
        utf8(args[1], &dig) < 0) {
        PyErr_SetString(PyExc_TypeError, "stage(): wrong argument types");
        return NULL;
    }
    long long k = PyLong_AsLongLong(args[2]), at = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) return NULL;
    JP jp;
    memset(&jp, 0, sizeof(jp));
    JVal doc;
    Py_ssize_t size = jp_parse(&jp, data.buf, data.len, &doc) < 0 ? STAGE_DECLINED
                                                                   : stage_one(&sink, &doc, &dig, k, at);
    jp_free(&jp);
    PyBuffer_Release(&data);
    if (sink_done(&sink, size == -1 ? -1 : 0) < 0) return NULL;
    if (size == STAGE_DECLINED) Py_RETURN_NONE;
    return PyLong_FromSsize_t(size);
}

#define FIRST_READ (1 << 16) /* staging.read_bytes reads files under 64 KiB in one go; others go there */

/* The directory the last file was opened in, so the next one in it is opened relative to it (openat
 * with one path component, not a full path walk per file). */
typedef struct {
    int fd;
    char *path; /* its path, with the trailing '/' */
    Py_ssize_t n;
} DirCache;

static void dir_cache_close(DirCache *d) {
    if (d->fd >= 0) close(d->fd);
    PyMem_Free(d->path);
    d->fd = -1;
    d->path = NULL;
    d->n = 0;
}

/* open(path) for reading, through the cached directory when path is in it. */
static int open_in(DirCache *d, const char *path, Py_ssize_t n) {
    const char *slash = memrchr(path, '/', (size_t)n);
    if (!slash || slash == path) return open(path, O_RDONLY | O_CLOEXEC);
    Py_ssize_t dn = slash - path + 1;
    if (d->fd < 0 || d->n != dn || memcmp(d->path, path, (size_t)dn) != 0) {
        dir_cache_close(d);
        char *copy = PyMem_Malloc((size_t)dn + 1);
        if (!copy) return open(path, O_RDONLY | O_CLOEXEC);
        memcpy(copy, path, (size_t)dn);
        copy[dn] = '\0';
        int fd = open(copy, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            PyMem_Free(copy);
            return open(path, O_RDONLY | O_CLOEXEC);
        }
        d->fd = fd;
        d->path = copy;
        d->n = dn;
    }
    return openat(d->fd, slash + 1, O_RDONLY | O_CLOEXEC);
}

/* A small file (< FIRST_READ and <= max_bytes) into buf: its length, or -1 (no exception): decline. */
static Py_ssize_t read_small(DirCache *d, PyObject *path, Py_ssize_t max_bytes, char *buf) {
    PyObject *fs = NULL;
    const char *p;
    Py_ssize_t pn;
    if (PyUnicode_IS_ASCII(path)) { /* the same bytes in any file-system encoding */
        p = (const char *)PyUnicode_DATA(path);
        pn = PyUnicode_GET_LENGTH(path);
    } else {
        if (!PyUnicode_FSConverter(path, &fs)) {
            PyErr_Clear();
            return -1;
        }
        p = PyBytes_AS_STRING(fs);
        pn = PyBytes_GET_SIZE(fs);
    }
    int fd = (Py_ssize_t)strlen(p) == pn ? open_in(d, p, pn) : -1; /* no NUL inside */
    Py_XDECREF(fs);
    if (fd < 0) return -1;
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
        /* A regular file (the walk lists nothing else) reads short only at its end, or when a signal
         * interrupts a read that already copied something — readers only get SIGINT, which aborts the
         * export. So no second read just to be told of the end. */
        if (n < FIRST_READ) break;
    }
    close(fd);
    if (n < 0 || n >= FIRST_READ || n > max_bytes) return -1;
    return n;
}

static int is_json_path(PyObject *p) {
    if (!PyUnicode_CheckExact(p)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(p);
    if (n < 5) return 0;
    if (PyUnicode_IS_ASCII(p)) return memcmp((const char *)PyUnicode_DATA(p) + n - 5, ".json", 5) == 0;
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
    DirCache dir = {-1, NULL, 0};
    JP jp;
    memset(&jp, 0, sizeof(jp));
    char digest[7 + 64] = "sha256:";
    Str dig = {NULL, digest, (Py_ssize_t)sizeof(digest), 1}; /* hex: nothing to escape */
    Py_ssize_t i = start < 0 ? 0 : start, n = PyList_GET_SIZE(paths), staged = 0;
    int failed = 0;
    for (; i < n; i++) {
        PyObject *path = PyList_GET_ITEM(paths, i);
        if (!is_json_path(path)) break;
        Py_ssize_t len = read_small(&dir, path, max_bytes, buf);
        if (len < 0) break;
        if (sha256_hex(buf, len, digest + 7) < 0) {
            failed = 1;
            break;
        }
        JVal doc;
        Py_ssize_t size = STAGE_DECLINED; /* not JSON this reader takes: the general path decides */
        jp_reset(&jp);
        if (jp_parse(&jp, buf, len, &doc) == 0) size = stage_one(&sink, &doc, &dig, k, at);
        if (size == STAGE_DECLINED) break;
        if (size < 0) {
            failed = 1;
            break;
        }
        at += size;
        k++;
        staged++;
    }
    jp_free(&jp);
    dir_cache_close(&dir);
    PyMem_Free(buf);
    if (sink_done(&sink, failed ? -1 : 0) < 0) return NULL;
    return Py_BuildValue("(nnL)", i, staged, at);
}
