/*
 * netdelay: a fixed-delay, seeded-loss link for one network namespace (issue #16), for kernels without sch_netem.
 *
 * Run inside the namespace (`ip netns exec NS netdelay ...`). An iptables-legacy rule in that namespace queues the
 * packets to delay, e.g. those arriving on eth0:
 *   iptables-legacy -A INPUT -i eth0 -j NFQUEUE --queue-num 0 --queue-bypass
 * Each queued packet is held for --delay-ms (plus a uniform draw in [-jitter, +jitter], never below 0), then
 * accepted, in arrival order: a packet is never released before one queued ahead of it, so jitter stretches gaps but
 * does not reorder (TCP would read reordering as loss). A --loss-percent fraction is dropped on arrival, decided by a
 * PRNG seeded with --seed: the same packet sequence loses the same packets in every run.
 *
 * Contract with whoever starts it (test/helpers/netns.ts):
 * - stdout "ready queue=N ..." once the queue is bound and configured; on exit one JSON line of counters.
 * - exit 0 after SIGTERM/SIGINT, having accepted every packet it held; exit 2 with the reason on stderr when the
 *   queue cannot be bound (no NFQUEUE support, queue taken by another process, not root); exit 1 on a usage error.
 * - it dies with its parent (PR_SET_PDEATHSIG): a namespace stays alive while a process is in it, so an orphaned
 *   delayer would keep a deleted lab's links and held packets around.
 * - --check binds and configures the queue, prints "ready", and exits 0: the availability probe.
 *
 * Throughput: the kernel copies metadata only (NFQNL_COPY_META), messages are read in batches (recvmmsg), and every
 * wake-up releases all due packets with one batch verdict ("accept every id up to N"), so per-packet cost is one
 * netlink message in and a share of one out.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define BATCH 64
#define MSG_BYTES 8192 /* one metadata-only packet message is ~200 bytes; room for an error or a large GSO header */

struct held {
  uint32_t id;
  uint64_t release_ns;
};

static struct {
  unsigned queue_num;
  uint64_t delay_ns;
  uint64_t jitter_ns;
  double loss; /* fraction in [0, 1] */
  uint64_t seed;
  uint32_t maxlen;
  bool gso;
  bool check;
  int rcvbuf;
  int rt_priority;
} opt = { .queue_num = 0, .maxlen = 1u << 17, .gso = true, .rcvbuf = 64 << 20, .seed = 1 };

static struct {
  struct held *ring;
  uint32_t mask, head, tail; /* head: oldest held; tail: next free; both increase, index with & mask */
  uint64_t last_release_ns;
  uint64_t now_ns;
  uint64_t loss_state, jitter_state;
  uint64_t received, accepted, dropped, overruns, verdict_errors, late_sum_ns, late_max_ns, max_held;
} st;

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t stop_signal, stop_sender;

static void on_signal(int sig, siginfo_t *info, void *context) {
  (void)context;
  stop_signal = sig;
  stop_sender = info ? info->si_pid : 0;
  stop_requested = 1;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64: small, fast, and good enough to decide loss and jitter reproducibly. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static double next_unit(uint64_t *state) { return (double)(next_random(state) >> 11) * 0x1.0p-53; }

static uint32_t held_count(void) { return st.tail - st.head; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
  (void)msg;
  (void)data;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  st.received++;
  if (opt.loss > 0 && next_unit(&st.loss_state) < opt.loss) {
    if (nfq_set_verdict(qh, id, NF_DROP, 0, NULL) < 0) st.verdict_errors++;
    st.dropped++;
    return 0;
  }
  int64_t offset = 0;
  if (opt.jitter_ns > 0) offset = (int64_t)(next_unit(&st.jitter_state) * (double)(2 * opt.jitter_ns)) - (int64_t)opt.jitter_ns;
  int64_t delay = (int64_t)opt.delay_ns + offset;
  uint64_t release = st.now_ns + (uint64_t)(delay > 0 ? delay : 0);
  if (release < st.last_release_ns) release = st.last_release_ns; /* keep arrival order */
  st.last_release_ns = release;
  if (held_count() > st.mask) {
    /* More held than the kernel queue admits can only follow lost messages: release the oldest now. */
    if (nfq_set_verdict_batch(qh, st.ring[st.head & st.mask].id, NF_ACCEPT) < 0) st.verdict_errors++;
    st.head++;
    st.accepted++;
  }
  st.ring[st.tail & st.mask] = (struct held){ .id = id, .release_ns = release };
  st.tail++;
  if (held_count() > st.max_held) st.max_held = held_count();
  return 0;
}

/* Accepts every held packet due by `now` (all of them when `all`) with one batch verdict. */
static void release_due(struct nfq_q_handle *qh, uint64_t now, bool all) {
  uint32_t n = 0;
  uint32_t last_id = 0;
  while (st.head != st.tail) {
    struct held *h = &st.ring[st.head & st.mask];
    if (!all && h->release_ns > now) break;
    if (now > h->release_ns) {
      uint64_t late = now - h->release_ns;
      st.late_sum_ns += late;
      if (late > st.late_max_ns) st.late_max_ns = late;
    }
    last_id = h->id;
    st.head++;
    n++;
  }
  if (n == 0) return;
  if (nfq_set_verdict_batch(qh, last_id, NF_ACCEPT) < 0) st.verdict_errors++;
  st.accepted += n;
}

/* The kernel's own counters for this queue in this namespace: packets it dropped because the queue was full, or
   because the message to us could not be delivered. */
static void kernel_drops(uint64_t *queue_dropped, uint64_t *user_dropped) {
  *queue_dropped = *user_dropped = 0;
  FILE *f = fopen("/proc/net/netfilter/nfnetlink_queue", "r");
  if (!f) return;
  unsigned num, portid, total, mode, range, qdrop, udrop, seq;
  while (fscanf(f, "%u %u %u %u %u %u %u %u %*d", &num, &portid, &total, &mode, &range, &qdrop, &udrop, &seq) == 8) {
    if (num == opt.queue_num) {
      *queue_dropped = qdrop;
      *user_dropped = udrop;
    }
  }
  fclose(f);
}

static void usage(const char *why) {
  fprintf(stderr,
          "netdelay: %s\n"
          "usage: netdelay [--queue N] [--delay-ms MS] [--jitter-ms MS] [--loss-percent P] [--seed S]\n"
          "                [--maxlen PACKETS] [--no-gso] [--rcvbuf BYTES] [--rt-priority 1-99] [--check]\n",
          why);
  exit(1);
}

static double number_arg(int argc, char **argv, int *i, double min, double max) {
  if (*i + 1 >= argc) usage("missing value");
  char *end;
  double v = strtod(argv[*i + 1], &end);
  if (*end != '\0' || !(v >= min && v <= max)) {
    fprintf(stderr, "netdelay: %s %s: expected a number in [%g, %g]\n", argv[*i], argv[*i + 1], min, max);
    exit(1);
  }
  (*i)++;
  return v;
}

static void parse(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--queue")) opt.queue_num = (unsigned)number_arg(argc, argv, &i, 0, 65535);
    else if (!strcmp(a, "--delay-ms")) opt.delay_ns = (uint64_t)(number_arg(argc, argv, &i, 0, 60000) * 1e6);
    else if (!strcmp(a, "--jitter-ms")) opt.jitter_ns = (uint64_t)(number_arg(argc, argv, &i, 0, 60000) * 1e6);
    else if (!strcmp(a, "--loss-percent")) opt.loss = number_arg(argc, argv, &i, 0, 100) / 100.0;
    else if (!strcmp(a, "--seed")) opt.seed = (uint64_t)number_arg(argc, argv, &i, 0, 9007199254740991.0);
    else if (!strcmp(a, "--maxlen")) opt.maxlen = (uint32_t)number_arg(argc, argv, &i, 1, 1 << 24);
    else if (!strcmp(a, "--rcvbuf")) opt.rcvbuf = (int)number_arg(argc, argv, &i, 65536, 1 << 30);
    else if (!strcmp(a, "--rt-priority")) opt.rt_priority = (int)number_arg(argc, argv, &i, 0, 99);
    else if (!strcmp(a, "--no-gso")) opt.gso = false;
    else if (!strcmp(a, "--check")) opt.check = true;
    else usage("unknown argument");
  }
}

static void fail_bind(const char *what) {
  fprintf(stderr,
          "netdelay: cannot %s for NFQUEUE %u: %s (needs root or CAP_NET_ADMIN in this namespace, a kernel with "
          "CONFIG_NETFILTER_NETLINK_QUEUE, and no other process bound to that queue number)\n",
          what, opt.queue_num, strerror(errno));
  exit(2);
}

int main(int argc, char **argv) {
  parse(argc, argv);
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 0; /* the parent died before the line above took effect */
  prctl(PR_SET_TIMERSLACK, 1UL);     /* wake within a microsecond of the deadline, not the default 50 */
  if (opt.rt_priority > 0) {
    struct sched_param sp = { .sched_priority = opt.rt_priority };
    if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0) fprintf(stderr, "netdelay: no SCHED_FIFO (%s): releases may run late under load\n", strerror(errno));
  }

  uint32_t cap = 1;
  while (cap < opt.maxlen) cap <<= 1;
  st.ring = calloc(cap, sizeof *st.ring);
  if (!st.ring) usage("out of memory for the hold queue");
  st.mask = cap - 1;
  st.loss_state = opt.seed ^ 0x6c6f7373u; /* separate streams: jitter draws must not shift which packets are lost */
  st.jitter_state = opt.seed ^ 0x6a697474u;

  struct nfq_handle *h = nfq_open();
  if (!h) fail_bind("open a netlink socket");
  struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)opt.queue_num, on_packet, NULL);
  if (!qh) fail_bind("bind");
  if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) fail_bind("set metadata-only copy mode");
  if (nfq_set_queue_maxlen(qh, opt.maxlen) < 0) fail_bind("set the queue length");
  /* With GSO a TSO super-packet (up to 64 KiB) is held as one; without, the kernel segments it first, so that loss
     applies per wire-sized packet, at the cost of ~40x the packets. */
  if (nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, opt.gso ? NFQA_CFG_F_GSO : 0) < 0) fail_bind("set the GSO flag");
  int fd = nfq_fd(h);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &opt.rcvbuf, sizeof opt.rcvbuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt.rcvbuf, sizeof opt.rcvbuf);

  printf("ready queue=%u delay_ms=%.3f jitter_ms=%.3f loss_percent=%.4f seed=%" PRIu64 " maxlen=%u gso=%d\n", opt.queue_num,
         opt.delay_ns / 1e6, opt.jitter_ns / 1e6, opt.loss * 100, opt.seed, opt.maxlen, opt.gso);
  fflush(stdout);
  if (opt.check) {
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
  }

  /* SIGTERM is delivered only inside ppoll, so a stop request can never fall between the check and the wait. */
  sigset_t blocked, during_wait;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigprocmask(SIG_BLOCK, &blocked, &during_wait);
  sigdelset(&during_wait, SIGTERM);
  sigdelset(&during_wait, SIGINT);
  struct sigaction sa = { .sa_sigaction = on_signal, .sa_flags = SA_SIGINFO };
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN); /* the counters go to a closed stdout when the parent is gone: not worth dying for */

  static char bufs[BATCH][MSG_BYTES];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  for (int i = 0; i < BATCH; i++) {
    iov[i] = (struct iovec){ .iov_base = bufs[i], .iov_len = MSG_BYTES };
    msgs[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[i], .msg_iovlen = 1 } };
  }
  /* The read end of stdout closing (POLLERR) means whoever started us is gone: stop, as on SIGTERM. */
  struct pollfd pfds[2] = { { .fd = fd, .events = POLLIN }, { .fd = STDOUT_FILENO, .events = 0 } };
  struct stat out_stat;
  nfds_t watched = fstat(STDOUT_FILENO, &out_stat) == 0 && S_ISFIFO(out_stat.st_mode) ? 2 : 1;

  while (!stop_requested) {
    uint64_t now = mono_ns();
    release_due(qh, now, false);
    struct timespec timeout, *wait = NULL;
    if (st.head != st.tail) {
      uint64_t due = st.ring[st.head & st.mask].release_ns;
      uint64_t left = due > now ? due - now : 0;
      timeout = (struct timespec){ .tv_sec = (time_t)(left / 1000000000u), .tv_nsec = (long)(left % 1000000000u) };
      wait = &timeout;
    }
    int ready = ppoll(pfds, watched, wait, &during_wait);
    if (ready <= 0) continue; /* timeout (a release is due) or a signal */
    if (watched == 2 && pfds[1].revents & (POLLERR | POLLHUP)) {
      stop_requested = 1;
      stop_signal = -1;
      break;
    }
    if (!(pfds[0].revents & POLLIN)) continue;
    /* Read at most a few batches before releasing again, so a flood cannot delay due packets. */
    for (int round = 0; round < 4; round++) {
      int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
      if (n < 0) {
        if (errno == ENOBUFS) {
          st.overruns++; /* messages lost: their packets wait in the kernel until a later batch verdict covers them */
          continue;
        }
        break; /* EAGAIN: drained */
      }
      st.now_ns = mono_ns();
      for (int i = 0; i < n; i++) nfq_handle_packet(h, bufs[i], (int)msgs[i].msg_len);
      if (n < BATCH) break;
    }
  }

  release_due(qh, 0, true);
  uint64_t queue_dropped, user_dropped;
  kernel_drops(&queue_dropped, &user_dropped);
  printf("{\"received\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"maxHeld\":%" PRIu64
         ",\"lateMeanUs\":%.1f,\"lateMaxUs\":%.1f,\"overruns\":%" PRIu64 ",\"verdictErrors\":%" PRIu64
         ",\"kernelQueueDropped\":%" PRIu64 ",\"kernelUserDropped\":%" PRIu64 ",\"stopSignal\":%d,\"stopSenderPid\":%d}\n",
         st.received, st.accepted, st.dropped, st.max_held, st.accepted ? st.late_sum_ns / 1e3 / (double)st.accepted : 0.0,
         st.late_max_ns / 1e3, st.overruns, st.verdict_errors, queue_dropped, user_dropped, (int)stop_signal, (int)stop_sender);
  fflush(stdout);
  nfq_destroy_queue(qh);
  nfq_close(h);
  return 0;
}
