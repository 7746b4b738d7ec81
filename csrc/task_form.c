/* task_form.c - a batch of plain tasks' records in a compact form (pack_tasks,
 * unpack_tasks): a Tasks message that neither side pickles.
 *
 * The driver pushes a worker's tasks as one Tasks message; pickled, a batch cost the
 * driver about 0.4 µs per task and the worker 0.2 to read, and a lone task (a round
 * trip) 1.7 µs. A batch whose every record is plain (no deps, nothing lent, no
 * retried exception types, its arguments' stored form inline without out-of-band
 * buffers, a request of (name, amount) pairs) travels in this form instead:
 *
 *     byte 0   TASKS_MARK (a pickle begins with 0x80, never this)
 *     u16      the number of records, then per record (little-endian):
 *     16 B     task id (unsigned)      8 B  fn id (unsigned)
 *     i32      num_returns             i32  attempt
 *     i64      backpressure            u8   helping
 *     u32 + B  the arguments' pickle (their INLINE stored form's bytes)
 *     u8       the request's pairs; per pair: u8 + B its name (UTF-8), f64 its amount
 *
 * unpack_tasks gives the Tasks record's tuple back, each record the same tuple
 * (_protocol.task_record) as a pickled batch's; _ring.decode calls it. */
#include "lane.h"
#include <string.h>

#define TASKS_MARK 0x03
#define TASKS_KIND 2      /* _protocol.TASKS (tests/test_lane.py checks both) */
#define RECORD_FIELDS 11  /* _protocol.Task's */

typedef struct { unsigned char *p, *end; int full; } Cursor;

static int put(Cursor *c, const void *src, size_t n) {
    if ((size_t)(c->end - c->p) < n) { c->full = 1; return -1; }
    if (src) memcpy(c->p, src, n);
    c->p += n;
    return 0;
}

static int put_le(Cursor *c, unsigned long long v, int n) {
    unsigned char b[8];
    for (int i = 0; i < n; i++, v >>= 8) b[i] = (unsigned char)v;
    return put(c, b, n);
}

static int put_long(Cursor *c, PyObject *v, int n, int is_signed) {  /* 0, or -1: no fit */
    if (!PyLong_CheckExact(v)) return -1;
    unsigned char b[16];
    if (_PyLong_AsByteArray((PyLongObject *)v, b, n, 1, is_signed) < 0) {
        PyErr_Clear();
        return -1;
    }
    return put(c, b, n);
}

/* One record, or -1 when it has no compact form (or no room). */
static int put_record(Cursor *c, PyObject *rec) {
    if (!PyTuple_CheckExact(rec) || PyTuple_GET_SIZE(rec) != RECORD_FIELDS) return -1;
    PyObject **f = &PyTuple_GET_ITEM(rec, 0);
    /* task_id fn_id num_returns args_stored dep_values lent request helping attempt
     * retry_exceptions backpressure */
    if (f[4] != Py_None || f[5] != Py_None || f[9] != Py_None || !PyBool_Check(f[7])) return -1;
    PyObject *args = f[3];
    if (!PyTuple_CheckExact(args) || PyTuple_GET_SIZE(args) != 3 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(args, 0)) ||
        PyLong_AsLong(PyTuple_GET_ITEM(args, 0)) != INLINE_KIND ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(args, 1)) ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(args, 2)) || PyTuple_GET_SIZE(PyTuple_GET_ITEM(args, 2)))
        return -1;
    PyObject *pickle = PyTuple_GET_ITEM(args, 1), *request = f[6];
    if (!PyTuple_CheckExact(request) || PyTuple_GET_SIZE(request) > 255 ||
        PyBytes_GET_SIZE(pickle) > 0x7fffffff)
        return -1;
    unsigned char helping = f[7] == Py_True;
    if (put_long(c, f[0], 16, 0) || put_long(c, f[1], 8, 0) || put_long(c, f[2], 4, 1) ||
        put_long(c, f[8], 4, 1) || put_long(c, f[10], 8, 1) || put(c, &helping, 1) ||
        put_le(c, (unsigned long long)PyBytes_GET_SIZE(pickle), 4) ||
        put(c, PyBytes_AS_STRING(pickle), PyBytes_GET_SIZE(pickle)))
        return -1;
    unsigned char pairs = (unsigned char)PyTuple_GET_SIZE(request);
    if (put(c, &pairs, 1)) return -1;
    for (Py_ssize_t i = 0; i < pairs; i++) {
        PyObject *pair = PyTuple_GET_ITEM(request, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyFloat_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            return -1;
        Py_ssize_t n;
        const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &n);
        if (!name) { PyErr_Clear(); return -1; }
        double amount = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(pair, 1));
        unsigned char len = (unsigned char)n;
        if (n > 255 || put(c, &len, 1) || put(c, name, n) || put(c, &amount, 8)) return -1;
    }
    return 0;
}

/* pack_tasks(batch: list, limit) -> bytes, or None (a record without the compact
 * form, or more than `limit` bytes) */
PyObject *pack_tasks(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "pack_tasks(batch: list, limit)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[0]), limit = PyLong_AsSsize_t(args[1]);
    if (limit < 0) return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "limit < 0"), NULL);
    if (n == 0 || n > 0xffff) Py_RETURN_NONE;
    unsigned char stack[4096];
    Py_ssize_t cap = limit < (Py_ssize_t)sizeof stack ? limit : (Py_ssize_t)sizeof stack;
    unsigned char *buf = stack;
    for (;;) {
        Cursor c = {buf, buf + cap, 0};
        unsigned char head[3] = {TASKS_MARK, (unsigned char)n, (unsigned char)(n >> 8)};
        int r = put(&c, head, 3);
        for (Py_ssize_t i = 0; r == 0 && i < n; i++) r = put_record(&c, PyList_GET_ITEM(args[0], i));
        if (r == 0) {
            PyObject *out = PyBytes_FromStringAndSize((const char *)buf, c.p - buf);
            if (buf != stack) PyMem_Free(buf);
            return out;
        }
        if (PyErr_Occurred()) { if (buf != stack) PyMem_Free(buf); return NULL; }
        if (!c.full || cap >= limit) break;       /* a record of no form, or over the limit */
        cap = cap * 4 < limit ? cap * 4 : limit;  /* else again, in a larger buffer */
        if (buf != stack) PyMem_Free(buf);
        if (!(buf = PyMem_Malloc(cap))) return PyErr_NoMemory();
    }
    if (buf != stack) PyMem_Free(buf);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- reading */

static int take(const unsigned char **p, const unsigned char *end, size_t n) {
    if ((size_t)(end - *p) < n) return -1;
    *p += n;
    return 0;
}

static unsigned long long le(const unsigned char *p, int n) {
    unsigned long long v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* One record's tuple; `request` is the previous record's (reused when its bytes are the
 * same: a batch's records share one request, as the driver's did). */
static PyObject *read_record(const unsigned char **pp, const unsigned char *end,
                             PyObject **request, const unsigned char **request_at,
                             size_t *request_len) {
    const unsigned char *p = *pp;
    if (take(pp, end, 16 + 8 + 4 + 4 + 8 + 1 + 4)) return NULL;
    PyObject *f[RECORD_FIELDS] = {NULL};
    f[0] = _PyLong_FromByteArray(p, 16, 1, 0);
    f[1] = _PyLong_FromByteArray(p + 16, 8, 1, 0);
    f[2] = PyLong_FromLong((int)(unsigned)le(p + 24, 4));
    f[8] = PyLong_FromLong((int)(unsigned)le(p + 28, 4));
    f[10] = PyLong_FromLongLong((long long)le(p + 32, 8));
    f[7] = PyBool_FromLong(p[40]);
    size_t n = (size_t)le(p + 41, 4);
    const unsigned char *pickle = *pp;
    PyObject *out = NULL;
    if (take(pp, end, n) || take(pp, end, 1)) goto done;
    const unsigned char *req = *pp - 1;
    for (unsigned pairs = req[0], i = 0; i < pairs; i++) {
        if (take(pp, end, 1) || take(pp, end, (*pp)[-1] + 8)) goto done;
    }
    size_t req_len = *pp - req;
    if (!*request || req_len != *request_len || memcmp(req, *request_at, req_len)) {
        PyObject *pairs = PyTuple_New(req[0]);
        const unsigned char *q = req + 1;
        for (unsigned i = 0; pairs && i < req[0]; i++) {
            double amount;
            memcpy(&amount, q + 1 + q[0], 8);
            PyObject *name = PyUnicode_DecodeUTF8((const char *)q + 1, q[0], NULL);
            PyObject *value = PyFloat_FromDouble(amount);
            PyObject *pair = name && value ? PyTuple_Pack(2, name, value) : NULL;
            Py_XDECREF(name);
            Py_XDECREF(value);
            if (!pair) { Py_CLEAR(pairs); break; }
            PyTuple_SET_ITEM(pairs, i, pair);
            q += 1 + q[0] + 8;
        }
        if (!pairs) goto done;
        Py_XSETREF(*request, pairs);
        *request_at = req;
        *request_len = req_len;
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)pickle, n);
    PyObject *kind = PyLong_FromLong(INLINE_KIND), *none = PyTuple_New(0);
    f[3] = bytes && kind && none ? PyTuple_Pack(3, kind, bytes, none) : NULL;
    Py_XDECREF(bytes); Py_XDECREF(kind); Py_XDECREF(none);
    f[6] = *request;
    Py_INCREF(f[6]);
    f[4] = Py_NewRef(Py_None);
    f[5] = Py_NewRef(Py_None);
    f[9] = Py_NewRef(Py_None);
    int ok = 1;
    for (int i = 0; i < RECORD_FIELDS; i++) ok = ok && f[i];
    if (ok && (out = PyTuple_New(RECORD_FIELDS))) {
        for (int i = 0; i < RECORD_FIELDS; i++) { PyTuple_SET_ITEM(out, i, f[i]); f[i] = NULL; }
    }
done:
    for (int i = 0; i < RECORD_FIELDS; i++) Py_XDECREF(f[i]);
    if (!out && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a truncated Tasks message");
    return out;
}

/* unpack_tasks(data) -> the Tasks record's tuple (TASKS, [task records]), or None when
 * `data` is not a compact Tasks message */
PyObject *unpack_tasks(PyObject *mod, PyObject *data) {
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) < 3 ||
        (unsigned char)PyBytes_AS_STRING(data)[0] != TASKS_MARK)
        Py_RETURN_NONE;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    const unsigned char *end = p + PyBytes_GET_SIZE(data);
    Py_ssize_t n = (Py_ssize_t)le(p + 1, 2);
    p += 3;
    PyObject *records = PyList_New(n), *request = NULL;
    const unsigned char *request_at = NULL;
    size_t request_len = 0;
    for (Py_ssize_t i = 0; records && i < n; i++) {
        PyObject *rec = read_record(&p, end, &request, &request_at, &request_len);
        if (!rec) Py_CLEAR(records);
        else PyList_SET_ITEM(records, i, rec);
    }
    Py_XDECREF(request);
    if (!records) return NULL;
    PyObject *kind = PyLong_FromLong(TASKS_KIND);
    PyObject *msg = kind ? PyTuple_Pack(2, kind, records) : NULL;
    Py_XDECREF(kind);
    Py_DECREF(records);
    return msg;
}
