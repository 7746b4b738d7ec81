/* lane_remote.c - f.remote() of a common task with no arguments, whole, in C
 * (Lane.remote): what Session._submit does around Lane.submit for it; and the same
 * around an actor's common call (Lane.call: see actor_call.c).
 *
 * That Python (sections, the lock, the closed check, the drain every 16th call of a
 * burst, the deferred callables) was most of what was left of a W1 task's bytecode.
 * Here, in its order: a Ctrl-C-safe section in the main thread (interrupts.sections:
 * a SIGINT that comes meanwhile is held, and raised at the end), the session's lock
 * held around Lane.submit, then the drain and the deferred callables outside it.
 * None, with nothing done: not this case (a closed session, options not plain):
 * Session._submit does it all. */
#include "lane.h"
#include "pythread.h"

static PyObject *s_raise_pending, *s_closed, *s_loop, *s_pump_lock,
    *s_drain, *s_deferred, *s_run_deferred, *s_acquire, *s_release;

int lane_remote_init_strings(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(s_raise_pending, "raise_pending")
    S(s_closed, "closed") S(s_loop, "loop") S(s_pump_lock, "pump_lock") S(s_drain, "drain")
    S(s_deferred, "deferred") S(s_run_deferred, "run_deferred") S(s_acquire, "acquire")
    S(s_release, "release")
#undef S
    return 0;
}

/* sections.depth += delta; on the way out, the held Ctrl-C raised (-1) */
static int section(LaneObject *self, long delta) {
    SectionsObject *sections = (SectionsObject *)self->sections;
    sections->depth += delta;
    if (delta > 0 || sections->depth || !sections->pending) return 0;
    PyObject *res = PyObject_CallMethodNoArgs(self->sections, s_raise_pending);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

static int call0(PyObject *callable) {
    PyObject *res = PyObject_CallNoArgs(callable);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

/* call0, with the error in flight (if any) kept: it is the one that tells */
static int call0_keeping_error(PyObject *callable) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int r = call0(callable);
    if (type) {
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    return r;
}

/* The loop's parts this needs, taken once (the loop is made after the lane) */
static int loop_parts(LaneObject *self) {
    if (self->drain) return 0;
    PyObject *loop = PyObject_GetAttr(self->session, s_loop);
    PyObject *pump_lock = loop ? PyObject_GetAttr(loop, s_pump_lock) : NULL;
    if (pump_lock) {
        self->pump_acquire = PyObject_GetAttr(pump_lock, s_acquire);
        self->pump_release = PyObject_GetAttr(pump_lock, s_release);
        self->deferred = PyObject_GetAttr(loop, s_deferred);
        self->run_deferred = PyObject_GetAttr(loop, s_run_deferred);
        self->drain = PyObject_GetAttr(loop, s_drain);
    }
    Py_XDECREF(pump_lock);
    Py_XDECREF(loop);
    if (self->pump_acquire && self->pump_release && self->deferred && self->run_deferred &&
        self->drain)
        return 0;
    Py_CLEAR(self->pump_acquire); Py_CLEAR(self->pump_release); Py_CLEAR(self->deferred);
    Py_CLEAR(self->run_deferred); Py_CLEAR(self->drain);
    return -1;
}

/* f.remote() of function `fn_id` (actor_id NULL), or the call of actor `actor_id`'s
 * method `fn_id` (actor_call.c): its ObjectRef, or None (nothing done) */
PyObject *lane_remote(LaneObject *self, PyObject *actor_id, PyObject *fn_id, PyObject *name,
                      PyObject *options) {
    if (loop_parts(self) < 0) return NULL;
    int in_main = PyThread_get_thread_ident() == self->main_thread;
    if (in_main && section(self, 1) < 0) return NULL;
    PyObject *ref = NULL;
    if (lock_take((LockObject *)self->raw_lock, -1) < 0) goto out;
    PyObject *closed = PyObject_GetAttr(self->session, s_closed);
    int open = closed == Py_False;
    Py_XDECREF(closed);
    if (open && actor_id)
        ref = lane_call(self, actor_id, fn_id, name, options);
    else if (open)
        ref = lane_submit(self, fn_id, name, options, self->no_args);
    else if (!PyErr_Occurred())
        ref = Py_NewRef(Py_None);
    int burst = self->burst, due = self->drain_due;
    lock_give((LockObject *)self->raw_lock);  /* (held: it cannot fail) */
    if (!ref || ref == Py_None) goto out;
    /* Inside a burst, results are collected every 16th call only (see Session._submit) */
    if (due) {
        PyObject *got = PyObject_CallOneArg(self->pump_acquire, Py_False);
        int mine = got ? PyObject_IsTrue(got) : -1;
        Py_XDECREF(got);
        if (mine > 0) {
            PyObject *call[2] = {self->drain_batch, burst ? Py_True : Py_False};
            PyObject *res = PyObject_Vectorcall(self->drain, call, 2, NULL);
            Py_XDECREF(res);
            if (call0_keeping_error(self->pump_release) < 0 || !res)  /* (released anyway) */
                Py_CLEAR(ref);
        } else if (mine < 0) {
            Py_CLEAR(ref);
        }
    }
out:
    if (in_main) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        int r = section(self, -1);  /* (a held Ctrl-C is raised here) */
        if (type) {
            PyErr_Clear();  /* (the first error is the one that tells) */
            PyErr_Restore(type, value, tb);
        } else if (r < 0) {
            Py_CLEAR(ref);
        }
    }
    if (ref && ref != Py_None && PyObject_IsTrue(self->deferred) > 0 &&
        call0(self->run_deferred) < 0)  /* (user code: outside the section) */
        Py_CLEAR(ref);
    return ref;
}

/* Lane.remote(fn_id, name, options) -> ObjectRef, or None (nothing done) */
PyObject *Lane_remote(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "remote(fn_id, name, options)");
        return NULL;
    }
    return lane_remote(self, NULL, args[0], args[1], args[2]);
}
