/* Folding windows of merge groups into bundle runs: the records final as staged (fold_singles) and a
 * window's task from the sorted groups (window_spec).
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

/* ---- staging.fold_window's copy of records final as staged ---------------------------------------- */

PyDoc_STRVAR(fold_singles_doc,
             "fold_singles(spec, pos, offsets, starts, maps, data, lines) -> (pos, count)\n\n"
             "From spec[pos] on, while spec lists a record final as staged (0, record), append the record's\n"
             "canonical bytes to the bytearray data (\",\" first unless data is empty) and its state line\n"
             "to the bytearray lines, as staging.fold_window copies them; return where spec stops doing so\n"
             "and how many were copied. offsets (array('q')) and starts (ints) locate record i's entry in\n"
             "maps (the staging files' buffers), as staging._Entries.locate does.");

static PyObject *fold_singles(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "fold_singles() takes exactly 7 arguments");
        return NULL;
    }
    PyObject *starts_o = args[3], *maps_o = args[4], *data = args[5], *lines = args[6];
    if (!PyLong_CheckExact(args[1]) || !PyTuple_CheckExact(starts_o) || !PyList_CheckExact(maps_o) ||
        !PyByteArray_CheckExact(data) || !PyByteArray_CheckExact(lines) ||
        PyTuple_GET_SIZE(starts_o) != PyList_GET_SIZE(maps_o) || PyTuple_GET_SIZE(starts_o) < 1) {
        PyErr_SetString(PyExc_TypeError, "fold_singles(): wrong argument types");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "fold_singles(): negative position");
        return NULL;
    }
    Py_ssize_t nf = PyTuple_GET_SIZE(starts_o);
    Py_buffer sv, ov;
    if (int_buffer(args[0], &sv, 0, 0) < 0) return NULL;
    if (PyObject_GetBuffer(args[2], &ov, PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_buffer *mv = PyMem_Calloc((size_t)nf, sizeof(Py_buffer));
    long long *starts = PyMem_Calloc((size_t)nf, sizeof(long long));
    Py_ssize_t got = 0, count = 0;
    PyObject *result = NULL;
    if (!mv || !starts) {
        PyErr_NoMemory();
        goto out;
    }
    if (ov.itemsize != 8 || !ov.format || strcmp(ov.format, "q") != 0) {
        PyErr_SetString(PyExc_TypeError, "fold_singles(): offsets must be an array('q')");
        goto out;
    }
    for (; got < nf; got++) {
        starts[got] = PyLong_AsLongLong(PyTuple_GET_ITEM(starts_o, got));
        if (PyErr_Occurred() || PyObject_GetBuffer(PyList_GET_ITEM(maps_o, got), &mv[got], PyBUF_SIMPLE) < 0) goto out;
    }
    const int32_t *spec = sv.buf;
    const int64_t *offs = ov.buf;
    Py_ssize_t nspec = sv.len / 4, noffs = ov.len / 8;
    while (pos + 1 < nspec && spec[pos] == 0) {
        int32_t i = spec[pos + 1];
        if (i < 0 || i + 1 >= noffs) {
            PyErr_SetString(PyExc_IndexError, "fold_singles(): record index out of range");
            goto out;
        }
        long long start = offs[i], end = offs[i + 1];
        Py_ssize_t f = nf - 1;
        while (f > 0 && starts[f] > start) f--; /* bisect_right(starts, start) - 1: a handful of files */
        start -= starts[f];
        end -= starts[f];
        if (start < 0 || end < start || end > mv[f].len) {
            PyErr_SetString(PyExc_ValueError, "fold_singles(): an entry lies outside its staging file");
            goto out;
        }
        const char *e = (const char *)mv[f].buf + start, *stop = (const char *)mv[f].buf + end;
        const char *nl = memchr(e, '\n', (size_t)(stop - e));
        const char *nl2 = nl ? memchr(nl + 1, '\n', (size_t)(stop - nl - 1)) : NULL;
        if (!nl2) {
            PyErr_SetString(PyExc_ValueError, "fold_singles(): a staged entry without its two header lines");
            goto out;
        }
        Py_ssize_t blob = stop - (nl2 + 1), line = nl2 + 1 - (nl + 1), old = PyByteArray_GET_SIZE(data);
        Py_ssize_t sep = old ? 1 : 0;
        if (PyByteArray_Resize(data, old + sep + blob) < 0) goto out;
        char *o = PyByteArray_AS_STRING(data) + old;
        if (sep) *o++ = ',';
        memcpy(o, nl2 + 1, (size_t)blob);
        old = PyByteArray_GET_SIZE(lines);
        if (PyByteArray_Resize(lines, old + line) < 0) goto out;
        memcpy(PyByteArray_AS_STRING(lines) + old, nl + 1, (size_t)line);
        pos += 2;
        count++;
    }
    result = Py_BuildValue("(nn)", pos, count);
out:
    for (Py_ssize_t j = 0; j < got; j++) PyBuffer_Release(&mv[j]);
    PyMem_Free(mv);
    PyMem_Free(starts);
    PyBuffer_Release(&ov);
    PyBuffer_Release(&sv);
    return result;
}

/* ---- a window's fold task from the sorted groups (grouping.Groups.windows) ----------------------- */

PyDoc_STRVAR(window_spec_doc,
             "window_spec(triples, lo, hi, head, nxt, keys, spec) -> None\n\n"
             "For the (key, record, fast) triples[lo:hi] of sorted groups: append each key to the list keys\n"
             "and the group to spec (a bytearray of native int32) as staging.fold_window reads it — 0, record\n"
             "when fast, else n and the group's n records, following head/nxt (array('i')) from record.");

static PyObject *window_spec(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "window_spec() takes exactly 7 arguments");
        return NULL;
    }
    PyObject *triples = args[0], *keys = args[5], *spec = args[6];
    if (!PyList_CheckExact(triples) || !PyList_CheckExact(keys) || !PyByteArray_CheckExact(spec)) {
        PyErr_SetString(PyExc_TypeError, "window_spec(): wrong argument types");
        return NULL;
    }
    Py_ssize_t lo = PyLong_AsSsize_t(args[1]), hi = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (lo < 0 || hi > PyList_GET_SIZE(triples) || lo > hi) {
        PyErr_SetString(PyExc_IndexError, "window_spec(): range out of bounds");
        return NULL;
    }
    Py_buffer hv, nv;
    if (int_buffer(args[3], &hv, 0, 0) < 0) return NULL;
    if (int_buffer(args[4], &nv, 0, 0) < 0) {
        PyBuffer_Release(&hv);
        return NULL;
    }
    const int32_t *head = hv.buf, *nxt = nv.buf;
    Py_ssize_t n = hv.len / 4;
    Buf out = {NULL, 0, 0};
    int failed = 0;
    for (Py_ssize_t i = lo; i < hi && !failed; i++) {
        PyObject *t = PyList_GET_ITEM(triples, i);
        PyObject *items[3];
        if (PyTuple_CheckExact(t) && PyTuple_GET_SIZE(t) == 3) {
            for (int j = 0; j < 3; j++) items[j] = PyTuple_GET_ITEM(t, j);
        } else if (PyList_CheckExact(t) && PyList_GET_SIZE(t) == 3) {
            for (int j = 0; j < 3; j++) items[j] = PyList_GET_ITEM(t, j);
        } else {
            PyErr_SetString(PyExc_TypeError, "window_spec(): triples must be (key, record, fast)");
            failed = 1;
            break;
        }
        long record = PyLong_AsLong(items[1]);
        int fast = PyObject_IsTrue(items[2]);
        if ((record == -1 && PyErr_Occurred()) || fast < 0 || PyList_Append(keys, items[0]) < 0) {
            failed = 1;
            break;
        }
        if (record < 0 || record >= n) {
            PyErr_SetString(PyExc_IndexError, "window_spec(): record out of range");
            failed = 1;
            break;
        }
        int32_t v[2] = {0, (int32_t)record};
        if (fast) {
            if (buf_put(&out, (const char *)v, 8) < 0) failed = 1;
            continue;
        }
        Py_ssize_t count_at = out.len, count = 0;
        if (buf_put(&out, (const char *)v, 4) < 0) { /* the count, filled in below */
            failed = 1;
            break;
        }
        for (int32_t g = head[record]; g != -1; g = nxt[g]) {
            if (g < 0 || g >= n || ++count > n) {
                PyErr_SetString(PyExc_ValueError, "window_spec(): a broken chain");
                failed = 1;
                break;
            }
            if (buf_put(&out, (const char *)&g, 4) < 0) {
                failed = 1;
                break;
            }
        }
        int32_t c32 = (int32_t)count;
        if (!failed) memcpy(out.p + count_at, &c32, 4);
    }
    if (!failed) {
        Py_ssize_t old = PyByteArray_GET_SIZE(spec);
        if (PyByteArray_Resize(spec, old + out.len) < 0) {
            failed = 1;
        } else if (out.len) {
            memcpy(PyByteArray_AS_STRING(spec) + old, out.p, (size_t)out.len);
        }
    }
    PyMem_Free(out.p);
    PyBuffer_Release(&hv);
    PyBuffer_Release(&nv);
    if (failed) return NULL;
    Py_RETURN_NONE;
}
