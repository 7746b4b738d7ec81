/* ids.c - the ids of tasks, puts and generator items, made in C (shmray._crecords).
 *
 * A task or put id: a counter from bit 61, this process's random prefix in bits
 * 16-60, the return index in the low 16 bits (shmray/_object_ref.py says why). Made
 * here so the lane (lane.c) needs no call into Python for one; _object_ref sets the
 * prefix at import and after a fork (reset_ids), under the GIL as every call here. */
#include "lane.h"

static unsigned __int128 id_prefix;
static unsigned long long id_counter;

PyObject *records_new_base_id(void) {
    unsigned __int128 id = id_prefix | ((unsigned __int128)++id_counter << 61);
    unsigned char bytes[16];
    for (int i = 0; i < 16; i++, id >>= 8) bytes[i] = (unsigned char)id;
    return _PyLong_FromByteArray(bytes, 16, 1, 0);
}

PyObject *new_base_id(PyObject *mod, PyObject *unused) {
    return records_new_base_id();
}

PyObject *reset_ids(PyObject *mod, PyObject *prefix) {
    unsigned char bytes[16];
    if (!PyLong_Check(prefix) || _PyLong_AsByteArray((PyLongObject *)prefix, bytes, 16, 1, 0) < 0)
        return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_TypeError, "an int"), NULL);
    unsigned __int128 p = 0;
    for (int i = 15; i >= 0; i--) p = p << 8 | bytes[i];
    id_prefix = p;
    id_counter = 0;
    Py_RETURN_NONE;
}

/* (see lane.h) _object_ref.stream_item_id_reference's formula, in 128 bits (it runs
 * four times per generator item in the driver) */
PyObject *item_id(PyObject *task_id, unsigned long long index) {
    unsigned char bytes[16];
    if (_PyLong_AsByteArray((PyLongObject *)task_id, bytes, 16, 1, 0) < 0) return NULL;
    unsigned __int128 task = 0;
    for (int i = 15; i >= 0; i--) task = task << 8 | bytes[i];
    const unsigned long long k = 0x9E3779B97F4A7C15ULL, lo = (unsigned long long)task;
    /* ((task * k) >> 64 ^ task) & MASK64: the product's bits 64-127, mod 2^64 */
    unsigned long long mixed = ((unsigned long long)(((unsigned __int128)lo * k) >> 64) +
                                (unsigned long long)(task >> 64) * k) ^ lo;
    unsigned __int128 id = (unsigned __int128)(mixed >> 45) << 101 |
                           (unsigned __int128)index << 61 |
                           (unsigned __int128)(mixed & ((1ULL << 45) - 1)) << 16 | 0xFFFF;
    for (int i = 0; i < 16; i++, id >>= 8) bytes[i] = (unsigned char)id;
    return _PyLong_FromByteArray(bytes, 16, 1, 0);
}

/* stream_item_id(task_id, index) */
PyObject *stream_item_id(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyLong_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "stream_item_id(task_id: int, index: int)");
        return NULL;
    }
    unsigned long long index = PyLong_AsUnsignedLongLong(args[1]);
    if (index == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    return item_id(args[0], index);
}

