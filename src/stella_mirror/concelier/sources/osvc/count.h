/* Counting a source's files (count_files) and listing a folder (list_dir).
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

/* ---- counting a source's files (export._count_files) ------------------------------------------ */


/* What an entry is: DT_REG, DT_DIR, anything else (skipped), or -1 when it cannot be told. Some file
 * systems do not fill d_type: those are asked (symbolic links not followed). */
static int entry_type(DIR *d, struct dirent *e) {
    if (e->d_type != DT_UNKNOWN) return e->d_type;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) return -1;
    return S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
}

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
        int type = entry_type(d, e);
        if (type < 0) {
            n = -1;
            break;
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

/* ---- listing a folder (sources.iter_file_lists) ------------------------------------------------------ */

typedef struct {
    char *name;
    size_t n;
    int dir;
} Entry_;

static int entry_cmp(const void *a, const void *b) {
    const Entry_ *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Valid UTF-8 (so byte order is code point order, and the name decodes as Python decodes it). */
static int utf8_ok(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        int k = utf8_seq(p, end);
        if (!k) return 0;
        p += k;
    }
    return 1;
}

PyDoc_STRVAR(list_dir_doc,
             "list_dir(path) -> (files, folders) | None\n\n"
             "The regular files and the folders directly in a folder (names starting with '.' skipped,\n"
             "symbolic links neither), each a list of full paths sorted by name, as sources.iter_file_lists\n"
             "lists them; None when the folder cannot be read or a name is not UTF-8 (the caller's own\n"
             "listing then decides).");

static PyObject *list_dir(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyUnicode_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "list_dir() takes a str");
        return NULL;
    }
    Py_ssize_t tn;
    const char *top = PyUnicode_AsUTF8AndSize(arg, &tn);
    if (!top) { /* not UTF-8 (surrogate escapes): the Python listing */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if ((Py_ssize_t)strlen(top) != tn) Py_RETURN_NONE;
    Entry_ *items = NULL;
    size_t n = 0, cap = 0;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    DIR *d = opendir(top);
    if (!d) {
        ok = 0;
    } else {
        struct dirent *e;
        errno = 0;
        while (ok && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            int type = entry_type(d, e);
            if (type < 0) {
                ok = 0;
                break;
            }
            if (type != DT_REG && type != DT_DIR) continue;
            size_t len = strlen(e->d_name);
            if (!utf8_ok(e->d_name, len)) {
                ok = 0;
                break;
            }
            if (n == cap) {
                size_t grown = cap ? cap * 2 : 256;
                Entry_ *more = realloc(items, grown * sizeof(Entry_));
                if (!more) {
                    ok = 0;
                    break;
                }
                items = more;
                cap = grown;
            }
            char *name = malloc(len + 1);
            if (!name) {
                ok = 0;
                break;
            }
            memcpy(name, e->d_name, len + 1);
            items[n++] = (Entry_){name, len, type == DT_DIR};
            errno = 0;
        }
        if (ok && errno) ok = 0;
        closedir(d);
        if (ok) qsort(items, n, sizeof(Entry_), entry_cmp);
    }
    Py_END_ALLOW_THREADS
    PyObject *files = NULL, *dirs = NULL, *result = NULL;
    if (ok && (files = PyList_New(0)) && (dirs = PyList_New(0))) {
        int slash = tn > 0 && top[tn - 1] == '/'; /* as os.path.join writes it */
        size_t i;
        for (i = 0; i < n; i++) {
            PyObject *path = PyUnicode_FromFormat(slash ? "%s%s" : "%s/%s", top, items[i].name);
            if (!path || PyList_Append(items[i].dir ? dirs : files, path) < 0) {
                Py_XDECREF(path);
                break;
            }
            Py_DECREF(path);
        }
        if (i == n) result = PyTuple_Pack(2, files, dirs);
    }
    Py_XDECREF(files);
    Py_XDECREF(dirs);
    for (size_t i = 0; i < n; i++) free(items[i].name);
    free(items);
    if (!ok) Py_RETURN_NONE;
    return result;
}
