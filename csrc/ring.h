/*
 * ring.h - a single-producer/single-consumer byte ring in shared memory, and a
 * doorbell that lets one consumer sleep on many rings.
 *
 * The C side is deliberately dumb: it never allocates, names or maps shared
 * memory. Python hands it a buffer (an mmap of a POSIX shm segment) and it
 * formats or attaches to it. Every field lives in the buffer, so the driver and
 * the workers see the same ring from different processes.
 *
 * Ring memory layout (all integers little-endian, native alignment):
 *
 *   offset size  field             written by
 *   ------ ----  ----------------  ------------------------------------------
 *        0    8  magic             init: SHMRAY_RING_MAGIC ("SHMRRNG1")
 *        8    4  version           init: SHMRAY_RING_VERSION
 *       12    4  header_size       init: SHMRAY_RING_HEADER_SIZE (256)
 *       16    8  capacity          init: data bytes, a power of two
 *       24   40  reserved          zero
 *       64    8  tail              producer: bytes ever pushed (monotonic)
 *       72    4  space_seq         consumer: futex word, bumped to wake a producer
 *       76    4  producer_waiting  producer: 1 while asleep waiting for space
 *       80   48  reserved          zero (keeps the producer's line to itself)
 *      128    8  head              consumer: bytes ever popped (monotonic)
 *      136    4  data_seq          producer: futex word, bumped to wake the consumer
 *      140    4  consumer_waiting  consumer: 1 while asleep waiting for data
 *      144  112  reserved          zero
 *      256  cap  data              records
 *
 * A record starts at an 8-byte aligned position: a u32 payload length, then the
 * payload, padded to the next multiple of 8. A record never wraps: when it does
 * not fit before the end of the data area the producer writes the length
 * SHMRAY_RING_WRAP there and the record starts again at offset 0.
 *
 * Publication: the producer writes the record, then stores tail with release
 * order; the consumer loads tail with acquire order, reads, then stores head
 * with release order. Sleep/wake is a Dekker handshake: the sleeper sets its
 * *_waiting flag, fences, re-checks, then FUTEX_WAITs on the seq word; the other
 * side publishes, fences, and only if the flag is set bumps the seq word and
 * FUTEX_WAKEs. So a push costs no system call while the consumer is awake.
 * Futexes are shared (not *_PRIVATE) because the two sides are processes.
 *
 * Doorbell layout (64 bytes), shared by every ring a single consumer drains:
 *
 *        0    8  magic             SHMRAY_DOORBELL_MAGIC ("SHMRBEL1")
 *        8    4  version           SHMRAY_RING_VERSION
 *       12    4  reserved
 *       16    4  seq               futex word, bumped by producers
 *       20    4  waiting           1 while the consumer sleeps on the doorbell
 *       24   40  reserved
 */
#ifndef SHMRAY_RING_H
#define SHMRAY_RING_H

#include <stddef.h>
#include <stdint.h>

#define SHMRAY_RING_MAGIC 0x31474e52524d4853ULL      /* the bytes "SHMRRNG1" */
#define SHMRAY_DOORBELL_MAGIC 0x314c4542524d4853ULL  /* the bytes "SHMRBEL1" */
#define SHMRAY_RING_VERSION 1u
#define SHMRAY_RING_HEADER_SIZE 256u
#define SHMRAY_DOORBELL_SIZE 64u
#define SHMRAY_RING_WRAP 0xFFFFFFFFu

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    uint8_t reserved0[40];
    uint64_t tail;
    uint32_t space_seq;
    uint32_t producer_waiting;
    uint8_t reserved1[48];
    uint64_t head;
    uint32_t data_seq;
    uint32_t consumer_waiting;
    uint8_t reserved2[112];
} shmray_ring_header;

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t reserved0;
    uint32_t seq;
    uint32_t waiting;
    uint8_t reserved1[40];
} shmray_doorbell;

/* A process-local view of a ring: pointers into the shared buffer. */
typedef struct {
    shmray_ring_header *hdr;
    uint8_t *data;
    uint64_t mask;
    shmray_doorbell *doorbell; /* optional: rung after every push */
} shmray_ring;

/* Wait results. */
#define SHMRAY_READY 1
#define SHMRAY_TIMEOUT 0
#define SHMRAY_INTERRUPTED (-1)

/* Format `size` bytes at `mem` as an empty ring. Returns 0, or -1 if too small. */
int shmray_ring_format(void *mem, size_t size);
/* Attach to a formatted ring; returns 0, -1 bad magic, -2 bad version, -3 bad size. */
int shmray_ring_attach(shmray_ring *ring, void *mem, size_t size);
int shmray_doorbell_format(void *mem, size_t size);
int shmray_doorbell_check(const void *mem, size_t size);

/* Largest payload a ring of this capacity accepts. */
uint32_t shmray_ring_max_payload(const shmray_ring *ring);
/* Push one record. 0: pushed; -1: not enough free space now. With wake == 0 a
 * sleeping consumer is left asleep: the caller batches pushes and calls
 * shmray_ring_wake once (one system call for many records). */
int shmray_ring_try_push(shmray_ring *ring, const void *payload, uint32_t len, int wake);
/* Wake the consumer if it sleeps; returns 1 if it did. */
int shmray_ring_wake(shmray_ring *ring);
/* Length of the next record and a pointer to it, -1 if the ring is empty, -2 if
 * the record header is impossible (the shared memory was corrupted). */
int64_t shmray_ring_peek(shmray_ring *ring, const uint8_t **payload);
/* Release the record returned by the last peek. */
void shmray_ring_release(shmray_ring *ring, uint32_t len);
uint64_t shmray_ring_used(const shmray_ring *ring);
int shmray_ring_nonempty(const shmray_ring *ring);

/* Blocking waits: spin for spin_ns, then sleep on the futex until timeout_ns
 * (negative: no limit). A signal interrupts the sleep (SHMRAY_INTERRUPTED) so
 * the caller can run Python's signal handlers and come back. */
int shmray_ring_wait_data(shmray_ring *ring, int64_t timeout_ns, int64_t spin_ns);

/* Interruptible waits, for a consumer whose process has other threads: the wake
 * counter (data_seq) is bumped by every wake of a waiting consumer and by every
 * interrupt. shmray_ring_wait_data_since also returns SHMRAY_READY once the counter
 * differs from `since` (read by the caller before it last looked at what else it
 * waits for), data or not; shmray_ring_interrupt, from another thread of the
 * consumer's process, always bumps the counter (so no interrupt is lost between
 * the caller's look and its sleep) and wakes the consumer if it sleeps. */
uint32_t shmray_ring_wake_count(const shmray_ring *ring);
void shmray_ring_interrupt(shmray_ring *ring);
int shmray_ring_wait_data_since(shmray_ring *ring, uint32_t since, int64_t timeout_ns,
                                int64_t spin_ns);
int shmray_ring_wait_space(shmray_ring *ring, uint32_t len, int64_t timeout_ns, int64_t spin_ns);
/* Wait until any of n rings has data; *index gets the first nonempty ring
 * scanning from `start`. All rings must ring `doorbell` on push. */
int shmray_wait_any(shmray_ring **rings, int n, int start, shmray_doorbell *doorbell,
                    int64_t timeout_ns, int64_t spin_ns, int *index);
/* Sleep-poll every poll_ns until some ring holds data that nobody popped during
 * one whole poll interval (its consumer is away), or timeout_ns passes. No
 * futex is involved, so producers pay nothing for this watcher. On every poll it
 * also wakes the sleeping consumer of any of the m `nudge` rings that hold data
 * (records pushed with wake == 0 are delivered within one poll interval). */
int shmray_wait_stalled(shmray_ring **rings, int n, shmray_ring **nudge, int m, int64_t poll_ns,
                        int64_t timeout_ns);

int64_t shmray_now_ns(void);

#endif
