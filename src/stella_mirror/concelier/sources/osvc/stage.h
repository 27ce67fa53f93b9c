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
