/* Counting a source's files (count_files).
 * Part of one translation unit: included by _osvc.c, in its order (no header guards). */

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
