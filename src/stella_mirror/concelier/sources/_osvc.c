/*
 * The Concelier export's hot path in C: reading OSV JSON documents into canonical single-record
 * advisories, staging them, merging staged records, counting a source's files. Python keeps the
 * rules that need tables (CVSS scoring, purls, non-ASCII severity words; passed in once through
 * configure(), with hashlib.sha256 for CPUs without the SHA extensions) and every case this module is
 * not sure of.
 *
 * It only ever *accepts*: a document that is not exactly the common shape (a type it does not allow,
 * an unknown field, a timestamp not in canonical form, an empty string where null and "" would
 * differ, a list longer than MAX_ITEMS, JSON outside the strict subset the reader takes, ...) is
 * declined (None), and the exact reader maps it or names the bad field; a merge group it is not sure
 * of goes to merge.merge. Differential tests hold entry() to the exact reader and to
 * osv_fast.python_entry, stage()/stage_files() to the Python staging path and merge() to
 * merge.merge, on the shared corpus, constructed variants and seeded fuzz (tests/unit/concelier:
 * test_osv_fast.py, test_staging_compiled.py, test_merge_compiled.py).
 *
 * Strings are compared as UTF-8 bytes: UTF-8 preserves code point order, so memcmp sorts exactly as
 * Python sorts str. Output strings are escaped exactly as orjson and msgspec escape them.
 *
 * One translation unit, in parts by concern (the osvc folder, included below in order):
 *   common.h  limits, the helpers' memo, the output buffer and string escaping, strings
 *   sha256.h  SHA-256 with the x86 SHA extensions (else hashlib)
 *   json.h    the strict JSON reader          osv.h    an OSV document -> canonical bytes (entry)
 *   stage.h   staging (stage, stage_files)    merge.h  merging staged records (merge)
 *   count.h   counting and listing a source's files (count_files, list_dir)
 *   group.h   grouping.group's union-find, chains and key pass, a bucket's alias pairs (join_pairs,
 *             chains, group_keys, alias_pairs)
 *   fold.h    staging.fold_window's copy of records final as staged, a window's task (fold_singles,
 *             window_spec)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "osvc/common.h"
#include "osvc/sha256.h"
#include "osvc/json.h"
#include "osvc/osv.h"
#include "osvc/stage.h"
#include "osvc/merge.h"
#include "osvc/count.h"
#include "osvc/group.h"
#include "osvc/fold.h"

PyDoc_STRVAR(configure_doc, "configure(cvss, purl, severity_word, sha256) -> None\n\n"
                            "The Python helpers entry() calls (see osv_fast).");

static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "configure() takes exactly 4 arguments");
        return NULL;
    }
    PyObject **slots[] = {&cvss_fn, &purl_fn, &severity_fn, &sha256_fn};
    for (int i = 0; i < 4; i++) {
        if (!PyCallable_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "configure() takes callables");
            return NULL;
        }
    }
    for (int i = 0; i < 4; i++) {
        Py_INCREF(args[i]);
        Py_XSETREF(*slots[i], args[i]);
    }
    memo_clear(&purl_memo); /* answers of the previous helpers */
    memo_clear(&cvss_memo);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tune_malloc_doc,
             "tune_malloc() -> bool\n\n"
             "Keep buffers of up to 32 MiB in the heap and freed memory up to 64 MiB for reuse (glibc's\n"
             "mallopt; False elsewhere). An export allocates and frees buffers of a few hundred KiB to a few\n"
             "MiB thousands of times (a chunk's staged entries, a folded window); glibc would map and unmap\n"
             "each, and every page of every new mapping is a page fault.");

static PyObject *tune_malloc(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
#ifdef __GLIBC__
    return PyBool_FromLong(mallopt(M_MMAP_THRESHOLD, 32 << 20) && mallopt(M_TRIM_THRESHOLD, 64 << 20));
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"entry", (PyCFunction)(void (*)(void))entry, METH_FASTCALL, entry_doc},
    {"stage", (PyCFunction)(void (*)(void))stage, METH_FASTCALL, stage_doc},
    {"stage_files", (PyCFunction)(void (*)(void))stage_files, METH_FASTCALL, stage_files_doc},
    {"merge", (PyCFunction)(void (*)(void))merge_entry, METH_FASTCALL, merge_doc},
    {"count_files", (PyCFunction)count_files, METH_O, count_files_doc},
    {"list_dir", (PyCFunction)list_dir, METH_O, list_dir_doc},
    {"join_pairs", (PyCFunction)(void (*)(void))join_pairs, METH_FASTCALL, join_pairs_doc},
    {"chains", (PyCFunction)(void (*)(void))chains, METH_FASTCALL, chains_doc},
    {"group_keys", (PyCFunction)(void (*)(void))group_keys, METH_FASTCALL, group_keys_doc},
    {"alias_pairs", (PyCFunction)alias_pairs, METH_O, alias_pairs_doc},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {"fold_singles", (PyCFunction)(void (*)(void))fold_singles, METH_FASTCALL, fold_singles_doc},
    {"window_spec", (PyCFunction)(void (*)(void))window_spec, METH_FASTCALL, window_spec_doc},
    {"tune_malloc", (PyCFunction)tune_malloc, METH_NOARGS, tune_malloc_doc},
    {"sha256_hex", (PyCFunction)py_sha256_hex, METH_O, sha256_hex_doc},
    {"use_native_sha256", (PyCFunction)use_native_sha256, METH_O, use_native_sha256_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_osvc", "The Concelier export's hot path in C (see osv_fast).", -1, methods, NULL, NULL, NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__osvc(void) {
    init_escape_table();
    init_crc_table();
    init_sha256();
    return PyModule_Create(&module);
}
