/* aiopg_io._glue._wake: the glue's wake(op) as C callables, for a driver that resumes
 * waiters from C (the io_uring_c driver's reap_and_wake, drivers/_uring.c).
 *
 * The Python twins are AsyncioGlue.wake (_asyncio.py) and TrioGlue.wake (_trio.py); each
 * waker here does the common case of its twin and calls the twin for every other:
 *
 * - FutureWaker(future_type, twin): op.waiter of exactly ``future_type`` (asyncio.Future,
 *   which loop.create_future returns on asyncio and uvloop) gets set_result(None) unless
 *   it is done; a RuntimeError (its loop is closed) is dropped, as the twin drops it.
 * - TaskWaker(parked_type, reschedule, twin): op.waiter of exactly ``parked_type`` (the trio
 *   glue's _Parked) whose task was not cancelled is cleared and its task handed to
 *   ``reschedule`` (trio.lowlevel.reschedule); a cancelled one goes to the twin, which
 *   delivers the cancellation.
 *
 * Calling a C-implemented callable from C costs no Python frame; the future's methods are
 * C too (_asyncio.Future), so on asyncio a completion reaches its task without one. This
 * module knows the loops only through the objects the glue hands it, so the glue stays the
 * one place that knows which loop runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *S_waiter, *S_done, *S_set_result, *S_raise_cancel, *S_task;

typedef struct {
    PyObject_HEAD
    PyObject *type;       /* the waiter type handled here */
    PyObject *reschedule; /* TaskWaker only */
    PyObject *twin;       /* the glue's wake */
} Waker;

static int
waker_traverse(Waker *w, visitproc visit, void *arg)
{
    Py_VISIT(w->type);
    Py_VISIT(w->reschedule);
    Py_VISIT(w->twin);
    return 0;
}

static int
waker_clear(Waker *w)
{
    Py_CLEAR(w->type);
    Py_CLEAR(w->reschedule);
    Py_CLEAR(w->twin);
    return 0;
}

static void
waker_dealloc(Waker *w)
{
    PyObject_GC_UnTrack(w);
    waker_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static int
future_waker_init(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *type, *twin;
    if (!PyArg_ParseTuple(args, "O!O:FutureWaker", &PyType_Type, &type, &twin))
        return -1;
    waker_clear(w);
    Py_INCREF(type);
    Py_INCREF(twin);
    w->type = type;
    w->twin = twin;
    return 0;
}

static int
task_waker_init(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *type, *reschedule, *twin;
    if (!PyArg_ParseTuple(args, "O!OO:TaskWaker", &PyType_Type, &type, &reschedule, &twin))
        return -1;
    waker_clear(w);
    Py_INCREF(type);
    Py_INCREF(reschedule);
    Py_INCREF(twin);
    w->type = type;
    w->reschedule = reschedule;
    w->twin = twin;
    return 0;
}

static PyObject *
call_twin(Waker *w, PyObject *op)
{
    if (w->twin == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "waker not initialised");
        return NULL;
    }
    return PyObject_CallOneArg(w->twin, op);
}

static PyObject *
future_waker_call(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *op;
    if (!PyArg_ParseTuple(args, "O:FutureWaker", &op))
        return NULL;
    PyObject *fut = PyObject_GetAttr(op, S_waiter);
    if (fut == NULL)
        return NULL;
    if (w->type == NULL || (PyObject *)Py_TYPE(fut) != w->type) {
        Py_DECREF(fut);
        return call_twin(w, op);
    }
    PyObject *done = PyObject_CallMethodNoArgs(fut, S_done);
    if (done == NULL) {
        Py_DECREF(fut);
        return NULL;
    }
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done == 0) {
        PyObject *res = PyObject_CallMethodOneArg(fut, S_set_result, Py_None);
        if (res == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) { /* its loop is closed: dropped */
                Py_DECREF(fut);
                return NULL;
            }
            PyErr_Clear();
        }
        Py_XDECREF(res);
    }
    Py_DECREF(fut);
    if (is_done < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
task_waker_call(Waker *w, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *op;
    if (!PyArg_ParseTuple(args, "O:TaskWaker", &op))
        return NULL;
    PyObject *parked = PyObject_GetAttr(op, S_waiter);
    if (parked == NULL)
        return NULL;
    if (w->type == NULL || (PyObject *)Py_TYPE(parked) != w->type) {
        Py_DECREF(parked);
        return call_twin(w, op);
    }
    PyObject *rc = PyObject_GetAttr(parked, S_raise_cancel);
    if (rc == NULL) {
        Py_DECREF(parked);
        return NULL;
    }
    int cancelled = rc != Py_None;
    Py_DECREF(rc);
    if (cancelled) {
        Py_DECREF(parked);
        return call_twin(w, op);
    }
    PyObject *task = PyObject_GetAttr(parked, S_task);
    Py_DECREF(parked);
    if (task == NULL)
        return NULL;
    if (PyObject_SetAttr(op, S_waiter, Py_None) < 0) {
        Py_DECREF(task);
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(w->reschedule, task);
    Py_DECREF(task);
    return res;
}

static PyTypeObject FutureWakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io._glue._wake.FutureWaker",
    .tp_basicsize = sizeof(Waker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FutureWaker(future_type, twin): waker(op) resumes op.waiter, an asyncio future",
    .tp_traverse = (traverseproc)waker_traverse,
    .tp_clear = (inquiry)waker_clear,
    .tp_dealloc = (destructor)waker_dealloc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)future_waker_init,
    .tp_call = (ternaryfunc)future_waker_call,
};

static PyTypeObject TaskWakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiopg_io._glue._wake.TaskWaker",
    .tp_basicsize = sizeof(Waker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "TaskWaker(parked_type, reschedule, twin): waker(op) reschedules op.waiter's task",
    .tp_traverse = (traverseproc)waker_traverse,
    .tp_clear = (inquiry)waker_clear,
    .tp_dealloc = (destructor)waker_dealloc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)task_waker_init,
    .tp_call = (ternaryfunc)task_waker_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aiopg_io._glue._wake",
    .m_doc = "The loop glue's wake(op) as C callables (see aiopg_io/_glue).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__wake(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(S_waiter, "waiter");
    INTERN(S_done, "done");
    INTERN(S_set_result, "set_result");
    INTERN(S_raise_cancel, "raise_cancel");
    INTERN(S_task, "task");
#undef INTERN
    if (PyType_Ready(&FutureWakerType) < 0 || PyType_Ready(&TaskWakerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FutureWakerType);
    if (PyModule_AddObject(m, "FutureWaker", (PyObject *)&FutureWakerType) < 0) {
        Py_DECREF(&FutureWakerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TaskWakerType);
    if (PyModule_AddObject(m, "TaskWaker", (PyObject *)&TaskWakerType) < 0) {
        Py_DECREF(&TaskWakerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
