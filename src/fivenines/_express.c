/* The express lane in C: fivenines.core.framing.express_request and express_response.
 *
 * The Python functions of the same names in core/framing.py are the specification: for every
 * input these return what those return (tests/unit/test_express_native.py compares them on
 * generated heads, Hypothesis-driven, and the proxy's equivalence tests run against both).
 * Each is one forward pass over the bytes received, with no regex engine, no lower-cased copy
 * of a request and no match objects; `make compile` builds this file next to the mypyc modules
 * and fivenines.accel loads it only while the build is current (FIVENINES_PURE=1: never).
 *
 * Which header fields send a message to the full path is not written here: the field classifiers
 * (request_field, response_field) are generated from the one table of them, core/fieldsets.py,
 * into _express_tables.h when the package is built (setup.py).
 *
 * Every index is checked against the length before it is read; nothing is written but the new
 * bytes objects returned.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Character classes, indexed by byte. */
static unsigned char TOKEN[256];   /* RFC 9110 tchar */
static unsigned char TARGET[256];  /* the origin-form target characters the express lane takes */
static unsigned char REGNAME[256]; /* a Host name (framing._HOST's second alternative) */
static unsigned char IPLIT[256];   /* inside [ ] in a Host */

static PyObject *METHODS[4]; /* b"GET", b"HEAD", b"DELETE", b"OPTIONS" */

static void
fill(unsigned char *table, const char *chars)
{
    for (; *chars; chars++)
        table[(unsigned char)*chars] = 1;
}

static void
fill_alnum(unsigned char *table)
{
    fill(table, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

#define VISIBLE(c) ((c) >= 0x21 && (c) <= 0x7e)      /* [!-~] */
#define FIELD_TEXT(c) ((c) == '\t' || ((c) >= 0x20 && (c) <= 0x7e)) /* [\t !-~] */

static inline unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* p[0:k], lower-cased, equals `want` (lower-case, k bytes; the caller checked the length)? */
static inline int
eq_lower(const unsigned char *p, const char *want, Py_ssize_t k)
{
    for (Py_ssize_t i = 0; i < k; i++)
        if (lower(p[i]) != (unsigned char)want[i])
            return 0;
    return 1;
}

/* The field name p[0:n], lower-cased, equals `want` (lower-case, k bytes)? */
static inline int
name_is_k(const unsigned char *p, Py_ssize_t n, const char *want, Py_ssize_t k)
{
    return n == k && eq_lower(p, want, k);
}

/* `want` must be a string literal ("" makes anything else a compile error): sizeof is its length */
#define name_is(p, n, want) name_is_k((p), (n), "" want, (Py_ssize_t)sizeof("" want) - 1)

/* request_field() and response_field(): which fields send a message to the full path, and which
 * the recognisers track (F_HOST, F_CONNECTION; FR_CONTENT_LENGTH, FR_CONNECTION). Generated from
 * the one table of them, fivenines/core/fieldsets.py, by the package build (setup.py). */
#include "_express_tables.h"

/* framing._HOST: ([hex:.]+]|regname*)(:[0-9]{0,5})? and nothing after */
static int
valid_host(const unsigned char *h, Py_ssize_t n)
{
    Py_ssize_t k = 0;
    if (n > 0 && h[0] == '[') {
        k = 1;
        while (k < n && IPLIT[h[k]])
            k++;
        if (k == 1 || k >= n || h[k] != ']')
            return 0;
        k++;
    }
    else {
        while (k < n && REGNAME[h[k]])
            k++;
    }
    if (k == n)
        return 1;
    if (h[k] != ':' || n - k - 1 > 5)
        return 0;
    for (k++; k < n; k++)
        if (h[k] < '0' || h[k] > '9')
            return 0;
    return 1;
}

/* value p[0:n] with spaces and tabs trimmed at both ends, lower-cased, is keep-alive? */
static int
trimmed_keep_alive(const unsigned char *p, Py_ssize_t n)
{
    while (n > 0 && (p[0] == ' ' || p[0] == '\t')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return name_is(p, n, "keep-alive");
}

/* A header field the recognisers look for: how many lines had its name, and where the last one
 * was (its line from the name to past its CRLF, its value). */
typedef struct {
    Py_ssize_t count, line, end, v0, v1;
} Field;

static inline void
seen(Field *f, Py_ssize_t line, Py_ssize_t end, Py_ssize_t v0, Py_ssize_t v1)
{
    f->count++;
    f->line = line;
    f->end = end;
    f->v0 = v0;
    f->v1 = v1;
}

/* p[0:len] copied to `o` without the line of `cut` when there is one; returns past what it wrote */
static char *
put_without(char *o, const unsigned char *p, Py_ssize_t len, const Field *cut)
{
    if (cut->count == 0) {
        memcpy(o, p, (size_t)len);
        return o + len;
    }
    memcpy(o, p, (size_t)cut->line);
    memcpy(o + cut->line, p + cut->end, (size_t)(len - cut->end));
    return o + cut->line + (len - cut->end);
}

/* n bytes of `src` copied to `o`; returns past them */
static inline char *
put(char *o, const void *src, Py_ssize_t n)
{
    memcpy(o, src, (size_t)n);
    return o + n;
}

/* the length of p[0:len] without the line of `cut` when there is one */
static inline Py_ssize_t
len_without(Py_ssize_t len, const Field *cut)
{
    return cut->count ? len - (cut->end - cut->line) : len;
}

/* p[0:head_len] as new bytes, without the line of `cut` when there is one (head_len: the whole
   request head, or the whole response) */
static PyObject *
head_without(const unsigned char *p, Py_ssize_t head_len, const Field *cut)
{
    PyObject *head = PyBytes_FromStringAndSize(NULL, len_without(head_len, cut));
    if (head != NULL)
        put_without(PyBytes_AS_STRING(head), p, head_len, cut);
    return head;
}

/* the next number of this process's request counter, as lower-case hex digits into `out`
   (16 bytes at least): their count (request_id, forwarded_head; the GIL guards the counter) */
static unsigned long long request_counter = 0;

static int
next_request_hex(char *out)
{
    char digits[16];
    int k = 0;
    unsigned long long n = ++request_counter;
    do {
        digits[k++] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n != 0);
    for (int i = 0; i < k; i++)
        out[i] = digits[k - 1 - i];
    return k;
}

/* What the express lane forwards, in one new bytes: p[0:head_len] without the line of `cut`,
   then "X-Request-Id: " id_prefix + the next request number in hex, "\r\nX-Forwarded-For: "
   peer_ip, and `tail` (fivenines.proxy.client: the rest of the forwarding headers and the
   blank line) */
static PyObject *
forwarded_head(const unsigned char *p, Py_ssize_t head_len, const Field *cut, PyObject *id_prefix,
               PyObject *peer_ip, PyObject *tail)
{
    static const char RID[] = "X-Request-Id: ", XFF[] = "\r\nX-Forwarded-For: ";
    char hex[16];
    int k = next_request_hex(hex);
    Py_ssize_t kept = len_without(head_len, cut);
    Py_ssize_t np = PyBytes_GET_SIZE(id_prefix), ni = PyBytes_GET_SIZE(peer_ip), nt = PyBytes_GET_SIZE(tail);
    PyObject *out = PyBytes_FromStringAndSize(NULL, kept + (Py_ssize_t)sizeof(RID) - 1 + np + k
                                                  + (Py_ssize_t)sizeof(XFF) - 1 + ni + nt);
    if (out == NULL)
        return NULL;
    char *o = put_without(PyBytes_AS_STRING(out), p, head_len, cut);
    o = put(o, RID, (Py_ssize_t)sizeof(RID) - 1);
    o = put(o, PyBytes_AS_STRING(id_prefix), np);
    o = put(o, hex, k);
    o = put(o, XFF, (Py_ssize_t)sizeof(XFF) - 1);
    o = put(o, PyBytes_AS_STRING(peer_ip), ni);
    put(o, PyBytes_AS_STRING(tail), nt);
    return out;
}

static PyObject *
express_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if ((nargs != 4 && nargs != 7) || !PyBytes_CheckExact(args[0])
        || (nargs == 7 && (!PyBytes_CheckExact(args[4]) || !PyBytes_CheckExact(args[5]) || !PyBytes_CheckExact(args[6])))) {
        PyErr_SetString(PyExc_TypeError, "express_request(data: bytes, max_header_bytes, max_request_line, max_headers"
                                         "[, id_prefix: bytes, peer_ip: bytes, tail: bytes])");
        return NULL;
    }
    Py_ssize_t max_header_bytes = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_request_line = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_headers = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (n > max_header_bytes)
        Py_RETURN_NONE;

    /* the request line */
    int mi;
    Py_ssize_t pos;
    if (n >= 4 && memcmp(p, "GET ", 4) == 0) { mi = 0; pos = 4; }
    else if (n >= 5 && memcmp(p, "HEAD ", 5) == 0) { mi = 1; pos = 5; }
    else if (n >= 7 && memcmp(p, "DELETE ", 7) == 0) { mi = 2; pos = 7; }
    else if (n >= 8 && memcmp(p, "OPTIONS ", 8) == 0) { mi = 3; pos = 8; }
    else Py_RETURN_NONE;
    Py_ssize_t method_len = pos - 1;
    Py_ssize_t t0 = pos;
    if (pos >= n || p[pos] != '/')
        Py_RETURN_NONE;
    for (pos++; pos < n && TARGET[p[pos]]; pos++)
        ;
    Py_ssize_t t1 = pos;
    if (n - pos < 11 || memcmp(p + pos, " HTTP/1.1\r\n", 11) != 0)
        Py_RETURN_NONE;
    pos += 11;

    /* header lines: Name: value CRLF, value = visible runs joined by spaces; then CRLF, the end */
    Py_ssize_t fields = 0;
    Field host = {0}, conn = {0};
    for (;;) {
        if (fields > 0 && n - pos == 2 && p[pos] == '\r' && p[pos + 1] == '\n')
            break;
        Py_ssize_t line = pos;
        while (pos < n && TOKEN[p[pos]])
            pos++;
        Py_ssize_t name_len = pos - line;
        if (name_len == 0 || n - pos < 2 || p[pos] != ':' || p[pos + 1] != ' ')
            Py_RETURN_NONE;
        pos += 2;
        Py_ssize_t v0 = pos;
        if (pos >= n || !VISIBLE(p[pos]))
            Py_RETURN_NONE;
        while (pos < n) {
            if (VISIBLE(p[pos]))
                pos++;
            else if (p[pos] == ' ') {
                while (pos < n && p[pos] == ' ')
                    pos++;
                if (pos >= n || !VISIBLE(p[pos]))
                    Py_RETURN_NONE;
            }
            else
                break;
        }
        Py_ssize_t v1 = pos;
        if (n - pos < 2 || p[pos] != '\r' || p[pos + 1] != '\n')
            Py_RETURN_NONE;
        pos += 2;
        fields++;
        int kind = request_field(p + line, name_len);
        if (kind == F_FULL)
            Py_RETURN_NONE;
        if (kind == F_HOST)
            seen(&host, line, pos, v0, v1);
        else if (kind == F_CONNECTION)
            seen(&conn, line, pos, v0, v1);
    }
    if (method_len + (t1 - t0) + 10 > max_request_line || fields > max_headers)
        Py_RETURN_NONE;
    if (host.count != 1 || !valid_host(p + host.v0, host.v1 - host.v0))
        Py_RETURN_NONE;
    int keep_alive = 1;
    if (conn.count > 1)
        Py_RETURN_NONE;
    if (conn.count == 1) {
        /* exactly "close" or "keep-alive", any case (the value is already trimmed by the grammar) */
        if (name_is(p + conn.v0, conn.v1 - conn.v0, "close"))
            keep_alive = 0;
        else if (!name_is(p + conn.v0, conn.v1 - conn.v0, "keep-alive"))
            Py_RETURN_NONE;
    }

    PyObject *target = PyBytes_FromStringAndSize((const char *)p + t0, t1 - t0);
    PyObject *host_value = PyBytes_FromStringAndSize((const char *)p + host.v0, host.v1 - host.v0);
    PyObject *head = nargs == 7 ? forwarded_head(p, n - 2, &conn, args[4], args[5], args[6])
                                : head_without(p, n - 2, &conn);
    PyObject *result = PyTuple_New(5);
    if (target == NULL || host_value == NULL || head == NULL || result == NULL) {
        Py_XDECREF(target);
        Py_XDECREF(host_value);
        Py_XDECREF(head);
        Py_XDECREF(result);
        return NULL;
    }
    Py_INCREF(METHODS[mi]);
    PyTuple_SET_ITEM(result, 0, METHODS[mi]);
    PyTuple_SET_ITEM(result, 1, target);
    PyTuple_SET_ITEM(result, 2, host_value);
    PyTuple_SET_ITEM(result, 3, head);
    PyObject *ka = keep_alive ? Py_True : Py_False;
    Py_INCREF(ka);
    PyTuple_SET_ITEM(result, 4, ka);
    return result;
}

static PyObject *
express_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "express_response(data: bytes)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);

    /* the first blank line, within 64 KiB */
    Py_ssize_t end = -1;
    Py_ssize_t last = n - 4 < 65536 ? n - 4 : 65536;
    for (Py_ssize_t i = 0; i <= last; i++) {
        const unsigned char *hit = memchr(p + i, '\r', (size_t)(last - i + 1));
        if (hit == NULL)
            break;
        i = hit - p;
        if (p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
            end = i;
            break;
        }
    }
    if (end < 0)
        Py_RETURN_NONE;
    Py_ssize_t limit = end + 4; /* the grammar is matched against p[0:limit] */

    /* the status line: HTTP/1.1 [2-4]dd reason CRLF */
    if (limit < 15 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[9] < '2' || p[9] > '4'
        || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' || p[12] != ' ')
        Py_RETURN_NONE;
    long status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    Py_ssize_t pos = 13;
    while (pos < limit && FIELD_TEXT(p[pos]))
        pos++;
    if (limit - pos < 2 || p[pos] != '\r' || p[pos + 1] != '\n')
        Py_RETURN_NONE;
    pos += 2;

    /* header lines: Name:value CRLF, then the blank line at `end` */
    Py_ssize_t fields = 0;
    Field cl = {0}, conn = {0};
    for (;;) {
        if (fields > 0 && pos == end + 2)
            break;
        Py_ssize_t line = pos;
        while (pos < limit && TOKEN[p[pos]])
            pos++;
        Py_ssize_t name_len = pos - line;
        if (name_len == 0 || pos >= limit || p[pos] != ':')
            Py_RETURN_NONE;
        pos++;
        Py_ssize_t v0 = pos;
        while (pos < limit && FIELD_TEXT(p[pos]))
            pos++;
        Py_ssize_t v1 = pos;
        if (limit - pos < 2 || p[pos] != '\r' || p[pos + 1] != '\n')
            Py_RETURN_NONE;
        pos += 2;
        fields++;
        int kind = response_field(p + line, name_len);
        if (kind == F_FULL)
            Py_RETURN_NONE;
        if (kind == FR_CONTENT_LENGTH)
            seen(&cl, line, pos, v0, v1);
        else if (kind == FR_CONNECTION)
            seen(&conn, line, pos, v0, v1);
    }
    if (status == 204 || status == 304 || cl.count != 1 || conn.count > 1)
        Py_RETURN_NONE;
    Py_ssize_t cl0 = cl.v0, cl1 = cl.v1;
    while (cl0 < cl1 && (p[cl0] == ' ' || p[cl0] == '\t'))
        cl0++;
    while (cl1 > cl0 && (p[cl1 - 1] == ' ' || p[cl1 - 1] == '\t'))
        cl1--;
    if (cl1 == cl0 || cl1 - cl0 > 15)
        Py_RETURN_NONE;
    long long length = 0;
    for (Py_ssize_t i = cl0; i < cl1; i++) {
        if (p[i] < '0' || p[i] > '9')
            Py_RETURN_NONE;
        length = length * 10 + (p[i] - '0');
    }
    if (length != (long long)(n - end - 4))
        Py_RETURN_NONE;
    if (conn.count == 1 && !trimmed_keep_alive(p + conn.v0, conn.v1 - conn.v0))
        Py_RETURN_NONE;

    /* the whole message without its Connection line: `data` itself when it has none */
    PyObject *message;
    if (conn.count == 0) {
        message = args[0];
        Py_INCREF(message);
    }
    else {
        message = head_without(p, n, &conn);
        end -= conn.end - conn.line;
    }
    PyObject *head = message; /* (the name the error path below uses) */
    PyObject *st = PyLong_FromLong(status);
    PyObject *end_obj = PyLong_FromSsize_t(end);
    PyObject *result = PyTuple_New(3);
    if (head == NULL || st == NULL || end_obj == NULL || result == NULL) {
        Py_XDECREF(head);
        Py_XDECREF(st);
        Py_XDECREF(end_obj);
        Py_XDECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, st);
    PyTuple_SET_ITEM(result, 1, head);
    PyTuple_SET_ITEM(result, 2, end_obj);
    return result;
}

/* request_id(prefix): prefix + the next number of this process's request counter in lower-case
   hex (1, 2, ...): fivenines.proxy.client's X-Request-Id, one call instead of next() on a count,
   hex(), a slice, encode and a concatenation */
static PyObject *
request_id(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 1 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "request_id(prefix: bytes)");
        return NULL;
    }
    char hex[16];
    int k = next_request_hex(hex);
    Py_ssize_t plen = PyBytes_GET_SIZE(args[0]);
    PyObject *out = PyBytes_FromStringAndSize(NULL, plen + k);
    if (out == NULL)
        return NULL;
    put(put(PyBytes_AS_STRING(out), PyBytes_AS_STRING(args[0]), plen), hex, k);
    return out;
}

static PyMethodDef methods[] = {
    {"express_request", (PyCFunction)(void (*)(void))express_request, METH_FASTCALL,
     "express_request(data, max_header_bytes, max_request_line, max_headers[, id_prefix, peer_ip, tail]): as "
     "fivenines.core.framing.express_request; with the last three, the head is what is forwarded (see forwarded_head)"},
    {"express_response", (PyCFunction)(void (*)(void))express_response, METH_FASTCALL,
     "express_response(data): as fivenines.core.framing.express_response"},
    {"request_id", (PyCFunction)(void (*)(void))request_id, METH_FASTCALL,
     "request_id(prefix): prefix + this process's next request number in hex (fivenines.proxy.client)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fivenines._express",
    "The express lane of fivenines.core.framing, in C (see that module).", -1, methods,
};

PyMODINIT_FUNC
PyInit__express(void)
{
    fill_alnum(TOKEN);
    fill(TOKEN, "!#$%&'*+-.^_`|~");
    fill_alnum(TARGET);
    fill(TARGET, "-._~!$&'()*+,;=:@/?%");
    fill_alnum(REGNAME);
    fill(REGNAME, "._~!$&'()*+,;=%-");
    fill(IPLIT, "0123456789abcdefABCDEF:.");
    const char *names[4] = {"GET", "HEAD", "DELETE", "OPTIONS"};
    for (int i = 0; i < 4; i++) {
        if (METHODS[i] == NULL) {
            METHODS[i] = PyBytes_FromString(names[i]);
            if (METHODS[i] == NULL)
                return NULL;
        }
    }
    return PyModule_Create(&module);
}
