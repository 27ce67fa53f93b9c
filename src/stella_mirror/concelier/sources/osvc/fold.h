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
