/* The data phase of a TCP-mode connection in C (fivenines.proxy.tcp): a Pump moves bytes between
 * a client socket and its target's socket, each read straight into one buffer and sent on, with
 * no bytes object and no Python frame per read.
 *
 * fivenines.proxy.tcp connects as before (uvloop transports: admission, target choice, retries,
 * connect timeout); once the target is connected and nothing is buffered, it pauses both
 * transports, hands the pump a duplicate of each socket and registers pump.read0 / pump.read1 with
 * the loop's add_reader. A read that the other side cannot take at once keeps the rest here and
 * tells Python (BLOCKED: stop reading this side, wait until the other is writable, then
 * write0/write1); DRAINED says the rest went out. An EOF is passed on as a shutdown of the other
 * side's writing (half-close) and told (EOF); a socket error is told (ERROR). Python's callback
 * (on_event(code, side)) does the loop bookkeeping and the closing; the GIL is held throughout
 * (the sockets are non-blocking), so one static buffer serves every pump.
 *
 * send_last(fd, data) is the last write of an HTTP connection that closes (fivenines.proxy.forward):
 * the data and the FIN in one segment, so that the client sees the end with the answer and never
 * closes first (its twin in Python is fivenines.proxy.listener.send_last_py).
 *
 * accept_read(listen_fd, size) is a plain http listener's accept (fivenines.proxy.plain): accept4
 * (non-blocking, close-on-exec) and the first read of what the client sent, in one call (its
 * twin in Python is fivenines.proxy.plain.accept_read_py). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 65536

enum { BLOCKED = 1, DRAINED = 2, END = 3, FAILED = 4 };

static char chunk[CHUNK];

typedef struct {
    PyObject_HEAD
    int fd[2];                    /* 0: the client, 1: the target (duplicates, owned) */
    char *pend[2];                /* read from the other side, not yet written to fd[i] */
    Py_ssize_t plen[2], poff[2];
    unsigned long long moved[2];  /* bytes read from fd[i] */
    int eof[2];                   /* fd[i] sent EOF */
    PyObject *on_event;
} Pump;

static PyObject *
tell(Pump *self, int code, int side)
{
    return PyObject_CallFunction(self->on_event, "ii", code, side);
}

/* Write what is pending for side o; 1 when all went, 0 when the socket is full, -1 on error. */
static int
flush(Pump *self, int o)
{
    while (self->poff[o] < self->plen[o]) {
        ssize_t w = send(self->fd[o], self->pend[o] + self->poff[o], (size_t)(self->plen[o] - self->poff[o]),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        self->poff[o] += w;
    }
    free(self->pend[o]);
    self->pend[o] = NULL;
    self->plen[o] = self->poff[o] = 0;
    return 1;
}

static PyObject *
pump_read(Pump *self, int i)
{
    int o = 1 - i;
    if (self->fd[i] < 0 || self->eof[i] || self->pend[o] != NULL)
        Py_RETURN_NONE;  /* (a readiness reported before the loop was told to stop) */
    ssize_t n;
    do {
        n = recv(self->fd[i], chunk, CHUNK, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        return tell(self, FAILED, i);
    }
    if (n == 0) {
        self->eof[i] = 1;
        shutdown(self->fd[o], SHUT_WR);  /* nothing is pending for o: reading i stops while it is */
        return tell(self, END, i);
    }
    self->moved[i] += (unsigned long long)n;
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = send(self->fd[o], chunk + off, (size_t)(n - off), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return tell(self, FAILED, o);
        }
        off += w;
    }
    if (off == n)
        Py_RETURN_NONE;
    self->pend[o] = malloc((size_t)(n - off));
    if (self->pend[o] == NULL)
        return PyErr_NoMemory();
    memcpy(self->pend[o], chunk + off, (size_t)(n - off));
    self->plen[o] = n - off;
    self->poff[o] = 0;
    return tell(self, BLOCKED, o);
}

static PyObject *
pump_write(Pump *self, int o)
{
    if (self->fd[o] < 0 || self->pend[o] == NULL)
        Py_RETURN_NONE;
    int r = flush(self, o);
    if (r < 0)
        return tell(self, FAILED, o);
    if (r == 0)
        Py_RETURN_NONE;
    return tell(self, DRAINED, o);
}

static PyObject *read0(Pump *self, PyObject *Py_UNUSED(a)) { return pump_read(self, 0); }
static PyObject *read1(Pump *self, PyObject *Py_UNUSED(a)) { return pump_read(self, 1); }
static PyObject *write0(Pump *self, PyObject *Py_UNUSED(a)) { return pump_write(self, 0); }
static PyObject *write1(Pump *self, PyObject *Py_UNUSED(a)) { return pump_write(self, 1); }

static void
release(Pump *self)
{
    for (int i = 0; i < 2; i++) {
        if (self->fd[i] >= 0) {
            close(self->fd[i]);
            self->fd[i] = -1;
        }
        free(self->pend[i]);
        self->pend[i] = NULL;
        self->plen[i] = self->poff[i] = 0;
    }
}

static PyObject *
pump_close(Pump *self, PyObject *Py_UNUSED(a))
{
    release(self);
    Py_RETURN_NONE;
}

static PyObject *
pump_moved(Pump *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->moved[0] + self->moved[1]);
}

static PyObject *
pump_pending(Pump *self, void *Py_UNUSED(c))
{
    return Py_BuildValue("nn", self->plen[0] - self->poff[0], self->plen[1] - self->poff[1]);
}

static PyObject *
pump_fds(Pump *self, void *Py_UNUSED(c))
{
    return Py_BuildValue("ii", self->fd[0], self->fd[1]);
}

static int
pump_init(Pump *self, PyObject *args, PyObject *kwds)
{
    int a, b;
    PyObject *cb;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Pump takes positional arguments only");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "iiO:Pump", &a, &b, &cb))
        return -1;
    if (!PyCallable_Check(cb)) {
        PyErr_SetString(PyExc_TypeError, "Pump: on_event must be callable");
        return -1;
    }
    release(self);
    self->fd[0] = a;
    self->fd[1] = b;
    self->eof[0] = self->eof[1] = 0;
    self->moved[0] = self->moved[1] = 0;
    Py_INCREF(cb);
    Py_XSETREF(self->on_event, cb);
    return 0;
}

static PyObject *
pump_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    Pump *self = (Pump *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd[0] = self->fd[1] = -1;
    return (PyObject *)self;
}

static int
pump_traverse(Pump *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_event);
    return 0;
}

static int
pump_clear(Pump *self)
{
    Py_CLEAR(self->on_event);
    return 0;
}

static void
pump_dealloc(Pump *self)
{
    PyObject_GC_UnTrack(self);
    release(self);
    pump_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef pump_methods[] = {
    {"read0", (PyCFunction)read0, METH_NOARGS, "The client is readable: move what it sent to the target."},
    {"read1", (PyCFunction)read1, METH_NOARGS, "The target is readable: move what it sent to the client."},
    {"write0", (PyCFunction)write0, METH_NOARGS, "The client is writable: send what is pending for it."},
    {"write1", (PyCFunction)write1, METH_NOARGS, "The target is writable: send what is pending for it."},
    {"close", (PyCFunction)pump_close, METH_NOARGS, "Close both duplicate sockets; drop what is pending."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pump_getset[] = {
    {"moved", (getter)pump_moved, NULL, "Bytes read from both sides so far.", NULL},
    {"pending", (getter)pump_pending, NULL, "Bytes waiting for (the client, the target).", NULL},
    {"fds", (getter)pump_fds, NULL, "The two sockets (-1 once closed).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fivenines._pump.Pump",
    .tp_basicsize = sizeof(Pump),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Pump(client_fd, target_fd, on_event): bytes both ways between two sockets it owns.",
    .tp_new = pump_new,
    .tp_init = (initproc)pump_init,
    .tp_dealloc = (destructor)pump_dealloc,
    .tp_traverse = (traverseproc)pump_traverse,
    .tp_clear = (inquiry)pump_clear,
    .tp_methods = pump_methods,
    .tp_getset = pump_getset,
};

/* send_last(fd, data): send data held back (MSG_MORE) and, when all of it went, end the sending
 * direction: the FIN is set on the segment still held, which then goes. The bytes sent; 0 when the
 * socket took none (full, or failed: the transport's own write then meets the same and reports it);
 * a partial send does not shut down (the rest is the caller's to write). */
static PyObject *
send_last(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send_last(fd: int, data: bytes)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "send_last: not a file descriptor");
        return NULL;
    }
    Py_ssize_t len = PyBytes_GET_SIZE(args[1]);
    ssize_t w;
    do
        w = send((int)fd, PyBytes_AS_STRING(args[1]), (size_t)len, MSG_MORE | MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        w = 0;
    else if (w == len)
        (void)shutdown((int)fd, SHUT_WR);
    return PyLong_FromSsize_t(w);
}

/* The peer's address as Python's socket module gives it: (host, port) for IPv4, (host, port,
 * flowinfo, scope_id) for IPv6. */
static PyObject *
peer_address(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port), (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

/* accept_read(listen_fd, size): None when no connection waits; else (fd, peer, data), data being
 * what the client sent already (at most size bytes), b"" when it closed (or reset), None when
 * nothing is there yet. The new socket is the caller's to close. */
static PyObject *
accept_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "accept_read(listen_fd: int, size: int)");
        return NULL;
    }
    long lfd = PyLong_AsLong(args[0]);
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if ((lfd == -1 || size == -1) && PyErr_Occurred())
        return NULL;
    if (lfd < 0 || lfd > INT_MAX || size <= 0) {
        PyErr_SetString(PyExc_ValueError, "accept_read: not a file descriptor, or no size");
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd;
    do
        fd = accept4((int)lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *peer = peer_address(&ss);
    if (peer == NULL) {
        close(fd);
        return NULL;
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL) {
        Py_DECREF(peer);
        close(fd);
        return NULL;
    }
    ssize_t r;
    do
        r = recv(fd, PyBytes_AS_STRING(data), (size_t)size, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        Py_DECREF(data);
        data = Py_None;
        Py_INCREF(data);
    } else {
        if (r < 0)
            r = 0;  /* reset already: read as an end (the first write fails too) */
        if (_PyBytes_Resize(&data, r) < 0) {
            Py_DECREF(peer);
            close(fd);
            return NULL;
        }
    }
    PyObject *out = Py_BuildValue("(iNN)", fd, peer, data);
    if (out == NULL)
        close(fd);
    return out;
}

static PyMethodDef module_methods[] = {
    {"accept_read", (PyCFunction)(void (*)(void))accept_read, METH_FASTCALL,
     "accept_read(listen_fd, size): accept a connection and read what it sent; (fd, peer, data) or None"},
    {"send_last", (PyCFunction)(void (*)(void))send_last, METH_FASTCALL,
     "send_last(fd, data): send data and the FIN in one segment; the bytes sent (see fivenines.proxy.forward)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fivenines._pump",
    "The data phase of a TCP-mode connection in C (see fivenines.proxy.tcp), and send_last.", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__pump(void)
{
    if (PyType_Ready(&PumpType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PumpType);
    if (PyModule_AddObject(m, "Pump", (PyObject *)&PumpType) < 0
        || PyModule_AddIntConstant(m, "BLOCKED", BLOCKED) < 0 || PyModule_AddIntConstant(m, "DRAINED", DRAINED) < 0
        || PyModule_AddIntConstant(m, "END", END) < 0 || PyModule_AddIntConstant(m, "FAILED", FAILED) < 0) {
        Py_DECREF(&PumpType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
