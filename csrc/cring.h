/* cring.h - what the files of shmray._cring share: the Python objects that wrap
 * ring.c's rings and doorbells, and the GIL-free sliced wait.
 * cringmodule.c: Doorbell, Ring and the module; ring_any.c: the waits on many rings. */
#ifndef SHMRAY_CRING_H
#define SHMRAY_CRING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ring.h"

#define SLICE_NS 50000000LL /* 50 ms */

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    shmray_doorbell *bell;
} DoorbellObject;

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    shmray_ring ring;
    PyObject *doorbell; /* DoorbellObject or NULL, kept alive with the ring */
} RingObject;

extern PyTypeObject RingType;
extern PyTypeObject DoorbellType;

/* timeout in seconds (None or NULL: forever) -> ns, -1 for forever */
int timeout_arg(PyObject *obj, int64_t *out);

/* Run a wait function in GIL-free slices, checking signals between slices.
 * Returns SHMRAY_READY, SHMRAY_TIMEOUT, or -2 with a Python error set. */
typedef int (*slice_fn)(void *arg, int64_t timeout_ns, int64_t spin_ns);
int wait_sliced(slice_fn fn, void *arg, int64_t timeout_ns, int64_t spin_ns);

/* The next message of `ring` as bytes (and released), None if it is empty, NULL on
 * an error. */
PyObject *pop_now(shmray_ring *ring);

extern PyMethodDef ring_any_methods[];  /* pop_any, wait_stalled */

#endif
