/* ring.c - the lock-free SPSC ring and doorbell described byte by byte in ring.h. */
#define _GNU_SOURCE
#include "ring.h"

#include <sched.h>

#include <errno.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(shmray_ring_header) == SHMRAY_RING_HEADER_SIZE, "ring header is 256 bytes");
_Static_assert(sizeof(shmray_doorbell) == SHMRAY_DOORBELL_SIZE, "doorbell is 64 bytes");
_Static_assert(offsetof(shmray_ring_header, tail) == 64, "tail at 64");
_Static_assert(offsetof(shmray_ring_header, head) == 128, "head at 128");
_Static_assert(offsetof(shmray_doorbell, seq) == 16, "doorbell seq at 16");

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define FULL_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int64_t shmray_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Shared (not private) futex: the waiter and the waker are different processes. */
static int futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tsp = &ts;
    }
    long r = syscall(SYS_futex, addr, FUTEX_WAIT, expected, tsp, NULL, 0);
    if (r == 0 || errno == EAGAIN) return SHMRAY_READY; /* woken, or the word already moved */
    if (errno == EINTR) return SHMRAY_INTERRUPTED;
    return SHMRAY_TIMEOUT; /* ETIMEDOUT */
}

static void futex_wake_all(uint32_t *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

static inline uint64_t align8(uint64_t n) { return (n + 7u) & ~(uint64_t)7u; }

int shmray_ring_format(void *mem, size_t size) {
    if (size < SHMRAY_RING_HEADER_SIZE + 64) return -1;
    uint64_t cap = 64;
    while (cap * 2 <= size - SHMRAY_RING_HEADER_SIZE) cap *= 2;
    memset(mem, 0, SHMRAY_RING_HEADER_SIZE);
    shmray_ring_header *h = (shmray_ring_header *)mem;
    h->version = SHMRAY_RING_VERSION;
    h->header_size = SHMRAY_RING_HEADER_SIZE;
    h->capacity = cap;
    STORE_REL(&h->magic, SHMRAY_RING_MAGIC); /* last: an attacher never sees a half-made ring */
    return 0;
}

int shmray_ring_attach(shmray_ring *ring, void *mem, size_t size) {
    shmray_ring_header *h = (shmray_ring_header *)mem;
    if (size < SHMRAY_RING_HEADER_SIZE || LOAD_ACQ(&h->magic) != SHMRAY_RING_MAGIC) return -1;
    if (h->version != SHMRAY_RING_VERSION || h->header_size != SHMRAY_RING_HEADER_SIZE) return -2;
    if (h->capacity < 64 || (h->capacity & (h->capacity - 1)) ||
        h->capacity > size - SHMRAY_RING_HEADER_SIZE)
        return -3;
    ring->hdr = h;
    ring->data = (uint8_t *)mem + SHMRAY_RING_HEADER_SIZE;
    ring->mask = h->capacity - 1;
    ring->doorbell = NULL;
    return 0;
}

int shmray_doorbell_format(void *mem, size_t size) {
    if (size < SHMRAY_DOORBELL_SIZE) return -1;
    memset(mem, 0, SHMRAY_DOORBELL_SIZE);
    shmray_doorbell *d = (shmray_doorbell *)mem;
    d->version = SHMRAY_RING_VERSION;
    STORE_REL(&d->magic, SHMRAY_DOORBELL_MAGIC);
    return 0;
}

int shmray_doorbell_check(const void *mem, size_t size) {
    const shmray_doorbell *d = (const shmray_doorbell *)mem;
    if (size < SHMRAY_DOORBELL_SIZE || LOAD_ACQ(&d->magic) != SHMRAY_DOORBELL_MAGIC) return -1;
    if (d->version != SHMRAY_RING_VERSION) return -2;
    return 0;
}

uint32_t shmray_ring_max_payload(const shmray_ring *ring) {
    /* Half the ring: a record of this size always fits once the ring drains,
     * whatever wrap padding it needs. */
    uint64_t half = (ring->mask + 1) / 2;
    return (uint32_t)(half - 8);
}

uint64_t shmray_ring_used(const shmray_ring *ring) {
    uint64_t head = LOAD_ACQ(&ring->hdr->head); /* head first: tail >= head then holds */
    return LOAD_ACQ(&ring->hdr->tail) - head;
}

int shmray_ring_nonempty(const shmray_ring *ring) {
    return LOAD_ACQ(&ring->hdr->tail) != LOAD_ACQ(&ring->hdr->head);
}

/* Space the next push of `len` bytes needs, wrap padding included. */
static inline uint64_t push_need(const shmray_ring *ring, uint64_t tail, uint32_t len) {
    uint64_t cap = ring->mask + 1, off = tail & ring->mask;
    uint64_t rec = align8(4 + (uint64_t)len);
    return (off + rec > cap) ? (cap - off) + rec : rec;
}

int shmray_ring_wake(shmray_ring *ring) {
    FULL_FENCE(); /* order our tail store before reading the sleepers' flags */
    int woke = 0;
    shmray_ring_header *h = ring->hdr;
    if (LOAD_RLX(&h->consumer_waiting)) {
        __atomic_fetch_add(&h->data_seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_all(&h->data_seq);
        woke = 1;
    }
    shmray_doorbell *d = ring->doorbell;
    if (d && LOAD_RLX(&d->waiting)) {
        __atomic_fetch_add(&d->seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_all(&d->seq);
        woke = 1;
    }
    return woke;
}

int shmray_ring_try_push(shmray_ring *ring, const void *payload, uint32_t len, int wake) {
    shmray_ring_header *h = ring->hdr;
    uint64_t tail = LOAD_RLX(&h->tail); /* only we write it */
    uint64_t head = LOAD_ACQ(&h->head);
    uint64_t cap = ring->mask + 1;
    uint64_t need = push_need(ring, tail, len);
    if (tail + need - head > cap) return -1;
    uint64_t off = tail & ring->mask;
    if (off + align8(4 + (uint64_t)len) > cap) { /* no room before the end: mark and wrap */
        uint32_t wrap = SHMRAY_RING_WRAP;
        memcpy(ring->data + off, &wrap, 4);
        off = 0;
    }
    memcpy(ring->data + off, &len, 4);
    memcpy(ring->data + off + 4, payload, len);
    STORE_REL(&h->tail, tail + need);
    if (wake) shmray_ring_wake(ring);
    return 0;
}

int64_t shmray_ring_peek(shmray_ring *ring, const uint8_t **payload) {
    shmray_ring_header *h = ring->hdr;
    uint64_t head = LOAD_RLX(&h->head); /* only we write it */
    uint64_t tail = LOAD_ACQ(&h->tail);
    if (head == tail) return -1;
    uint64_t off = head & ring->mask;
    uint32_t len;
    memcpy(&len, ring->data + off, 4);
    if (len == SHMRAY_RING_WRAP) {
        /* The record was placed at offset 0; the release below skips the tail end too. */
        off = 0;
        memcpy(&len, ring->data, 4);
    }
    /* Never trust shared memory with our address space: a corrupt length must not
     * send the reader past the mapping. */
    if (len > shmray_ring_max_payload(ring) || off + 4 + (uint64_t)len > ring->mask + 1 ||
        push_need(ring, head, len) > tail - head)
        return -2;
    *payload = ring->data + off + 4;
    return len;
}

void shmray_ring_release(shmray_ring *ring, uint32_t len) {
    shmray_ring_header *h = ring->hdr;
    uint64_t head = LOAD_RLX(&h->head);
    STORE_REL(&h->head, head + push_need(ring, head, len));
    FULL_FENCE();
    if (LOAD_RLX(&h->producer_waiting)) {
        __atomic_fetch_add(&h->space_seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_all(&h->space_seq);
    }
}

/* Generic wait: spin on `ready` for spin_ns, then sleep on `seq` with the
 * waiting flag raised, re-checking after raising it (see ring.h). */
typedef int (*ready_fn)(void *arg);

static int wait_until(ready_fn ready, void *arg, uint32_t *seq, uint32_t *waiting,
                      int64_t timeout_ns, int64_t spin_ns) {
    if (ready(arg)) return SHMRAY_READY;
    int64_t start = shmray_now_ns();
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
    if (spin_ns > 0) {
        int64_t spin_end = start + spin_ns;
        for (unsigned i = 1;; i++) {
            cpu_relax();
            if (ready(arg)) return SHMRAY_READY;
            if ((i & 31) == 0) {
                int64_t now = shmray_now_ns();
                if (now >= spin_end || now >= deadline) break;
                /* The side we wait for may be runnable on this very core (the driver
                 * is not pinned): give it the core rather than spin it out. */
                sched_yield();
            }
        }
    }
    for (;;) {
        uint32_t seen = __atomic_load_n(seq, __ATOMIC_SEQ_CST);
        __atomic_store_n(waiting, 1, __ATOMIC_SEQ_CST);
        FULL_FENCE();
        if (ready(arg)) {
            __atomic_store_n(waiting, 0, __ATOMIC_RELAXED);
            return SHMRAY_READY;
        }
        int64_t now = shmray_now_ns();
        if (now >= deadline) {
            __atomic_store_n(waiting, 0, __ATOMIC_RELAXED);
            return SHMRAY_TIMEOUT;
        }
        int r = futex_wait(seq, seen, timeout_ns < 0 ? -1 : deadline - now);
        __atomic_store_n(waiting, 0, __ATOMIC_RELAXED);
        if (r == SHMRAY_INTERRUPTED) return r;
        if (ready(arg)) return SHMRAY_READY;
    }
}

static int ring_has_data(void *arg) { return shmray_ring_nonempty((shmray_ring *)arg); }

int shmray_ring_wait_data(shmray_ring *ring, int64_t timeout_ns, int64_t spin_ns) {
    shmray_ring_header *h = ring->hdr;
    return wait_until(ring_has_data, ring, &h->data_seq, &h->consumer_waiting, timeout_ns, spin_ns);
}

uint32_t shmray_ring_wake_count(const shmray_ring *ring) {
    return __atomic_load_n(&ring->hdr->data_seq, __ATOMIC_ACQUIRE);
}

void shmray_ring_interrupt(shmray_ring *ring) {
    shmray_ring_header *h = ring->hdr;
    __atomic_fetch_add(&h->data_seq, 1, __ATOMIC_SEQ_CST);
    FULL_FENCE();
    if (LOAD_RLX(&h->consumer_waiting)) futex_wake_all(&h->data_seq);
}

typedef struct { shmray_ring *ring; uint32_t since; } since_arg;

static int ring_has_data_or_woke(void *arg) {
    since_arg *a = (since_arg *)arg;
    return shmray_ring_nonempty(a->ring) || shmray_ring_wake_count(a->ring) != a->since;
}

int shmray_ring_wait_data_since(shmray_ring *ring, uint32_t since, int64_t timeout_ns,
                                int64_t spin_ns) {
    since_arg a = {ring, since};
    shmray_ring_header *h = ring->hdr;
    return wait_until(ring_has_data_or_woke, &a, &h->data_seq, &h->consumer_waiting, timeout_ns,
                      spin_ns);
}

typedef struct { shmray_ring *ring; uint32_t len; } space_arg;

static int ring_has_space(void *arg) {
    space_arg *a = (space_arg *)arg;
    shmray_ring_header *h = a->ring->hdr;
    uint64_t tail = LOAD_RLX(&h->tail);
    return tail + push_need(a->ring, tail, a->len) - LOAD_ACQ(&h->head) <= a->ring->mask + 1;
}

int shmray_ring_wait_space(shmray_ring *ring, uint32_t len, int64_t timeout_ns, int64_t spin_ns) {
    space_arg a = {ring, len};
    shmray_ring_header *h = ring->hdr;
    return wait_until(ring_has_space, &a, &h->space_seq, &h->producer_waiting, timeout_ns, spin_ns);
}

typedef struct { shmray_ring **rings; int n; int start; int found; } any_arg;

static int any_has_data(void *arg) {
    any_arg *a = (any_arg *)arg;
    for (int k = 0; k < a->n; k++) {
        int i = (a->start + k) % a->n;
        if (shmray_ring_nonempty(a->rings[i])) {
            a->found = i;
            return 1;
        }
    }
    return 0;
}

int shmray_wait_any(shmray_ring **rings, int n, int start, shmray_doorbell *doorbell,
                    int64_t timeout_ns, int64_t spin_ns, int *index) {
    any_arg a = {rings, n, n > 0 ? start % n : 0, -1};
    int r = wait_until(any_has_data, &a, &doorbell->seq, &doorbell->waiting, timeout_ns, spin_ns);
    *index = a.found;
    return r;
}

static int wait_stalled_into(uint64_t *seen_head, shmray_ring **rings, int n, shmray_ring **nudge,
                             int m, int64_t poll_ns, int64_t timeout_ns);

int shmray_wait_stalled(shmray_ring **rings, int n, shmray_ring **nudge, int m, int64_t poll_ns,
                        int64_t timeout_ns) {
    uint64_t small[256], *seen_head = n <= 256 ? small : malloc((size_t)n * sizeof *seen_head);
    if (!seen_head) return SHMRAY_TIMEOUT;  /* no memory: the caller polls again */
    int r = wait_stalled_into(seen_head, rings, n, nudge, m, poll_ns, timeout_ns);
    if (seen_head != small) free(seen_head);
    return r;
}

static int wait_stalled_into(uint64_t *seen_head, shmray_ring **rings, int n, shmray_ring **nudge,
                             int m, int64_t poll_ns, int64_t timeout_ns) {
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : shmray_now_ns() + timeout_ns;
    for (int i = 0; i < n; i++) seen_head[i] = LOAD_ACQ(&rings[i]->hdr->head);
    for (;;) {
        int64_t left = deadline - shmray_now_ns();
        int64_t nap = poll_ns < left ? poll_ns : (left > 0 ? left : 0);
        struct timespec ts = {nap / 1000000000LL, nap % 1000000000LL};
        if (nanosleep(&ts, NULL) != 0 && errno == EINTR) return SHMRAY_INTERRUPTED;
        for (int j = 0; j < m; j++)
            if (shmray_ring_nonempty(nudge[j])) shmray_ring_wake(nudge[j]);
        for (int i = 0; i < n; i++) {
            uint64_t head = LOAD_ACQ(&rings[i]->hdr->head);
            if (head == seen_head[i] && LOAD_ACQ(&rings[i]->hdr->tail) != head) return SHMRAY_READY;
            seen_head[i] = head;
        }
        if (shmray_now_ns() >= deadline) return SHMRAY_TIMEOUT;
    }
}
