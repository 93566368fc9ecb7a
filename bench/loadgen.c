// The fast load generator: the same job and the same JSON result as
// loadgen.ts (load mode), in C with epoll, so that on a 2-core machine the
// load side costs far less per message than any server under test. run.ts
// compiles it with `cc -O2` into bench/results/ when a C compiler exists and
// falls back to loadgen.ts otherwise.
//
// Usage: loadgen HOST PORT RAW CONNECTIONS INFLIGHT SIZE WARMUP_MS DURATION_MS SERVER_PID
//
// Frames are precomputed and masked once; k replies are answered with one
// write of k frames. Replies are parsed by reading headers and skipping
// payloads (masked ones too: a raw TCP echo sends our frames back as they are).

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_SIZE (1 << 20)
#define READ_SIZE (256 * 1024)

typedef struct {
  int fd;
  /* Parser: payload bytes of the current frame still to skip. */
  uint64_t skip;
  int counts;
  uint8_t stash[16];
  int stash_len;
  /* Send times of messages in flight (a ring). */
  double *times;
  int first, queued;
  /* A write the kernel has not fully taken, and frames owed after it. */
  const uint8_t *pending;
  size_t pending_len;
  int owed;
  int want_out;
} conn_t;

static int inflight;
static size_t frame_len;
static uint8_t *batch;
static int measuring, stopping;
static uint64_t received;
static uint32_t *hist;
static uint64_t samples;
static int epfd;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static double proc_cpu(int pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  p += 2;
  /* Fields from state (3): utime is 14, stime 15. */
  for (int field = 3; field < 14 && p; field++) p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
  if (!p) return 0;
  unsigned long long ut = 0, st = 0;
  sscanf(p, "%llu %llu", &ut, &st);
  return (ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double machine_cpu(void) {
  unsigned long long v[8] = {0};
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return 0;
  if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
             &v[4], &v[5], &v[6], &v[7]) != 8) {
    fclose(f);
    return 0;
  }
  fclose(f);
  unsigned long long total = 0;
  for (int i = 0; i < 8; i++) total += v[i];
  return (total - v[3] - v[4]) / (double)sysconf(_SC_CLK_TCK);
}

static void set_out(conn_t *c, int on) {
  if (c->want_out == on) return;
  c->want_out = on;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what it can; returns 0 once nothing is left pending. */
static int push_out(conn_t *c) {
  for (;;) {
    if (c->pending_len == 0) {
      if (c->owed == 0) return 0;
      int k = c->owed < inflight ? c->owed : inflight;
      c->owed -= k;
      c->pending = batch;
      c->pending_len = (size_t)k * frame_len;
    }
    ssize_t n = write(c->fd, c->pending, c->pending_len);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return 1;
      return -1;
    }
    c->pending += n;
    c->pending_len -= (size_t)n;
    if (c->pending_len > 0) return 1;
  }
}

static void send_frames(conn_t *c, int k, double t) {
  int cap = inflight;
  for (int i = 0; i < k; i++) c->times[(c->first + c->queued++) % cap] = t;
  c->owed += k;
  if (c->pending_len > 0) return;
  int r = push_out(c);
  if (r > 0) set_out(c, 1);
}

/* Returns the number of data messages completed in buf. */
static int parse(conn_t *c, const uint8_t *buf, size_t n) {
  int done = 0;
  size_t i = 0;
  while (i < n) {
    if (c->skip > 0) {
      size_t avail = n - i;
      if (avail < c->skip) {
        c->skip -= avail;
        return done;
      }
      i += c->skip;
      c->skip = 0;
      if (c->counts) done++;
      continue;
    }
    size_t left = n - i;
    if (left < 2) goto stash;
    uint8_t b0 = buf[i], b1 = buf[i + 1];
    uint64_t len = b1 & 127;
    size_t header = (b1 & 0x80) ? 6 : 2;
    if (len == 126) header += 2;
    else if (len == 127) header += 8;
    if (left < header) goto stash;
    if (len == 126) len = ((uint64_t)buf[i + 2] << 8) | buf[i + 3];
    else if (len == 127) {
      len = 0;
      for (int j = 0; j < 8; j++) len = (len << 8) | buf[i + 2 + j];
    }
    i += header;
    c->counts = (b0 & 0x80) && !(b0 & 0x08);
    if (len == 0) {
      if (c->counts) done++;
    } else c->skip = len;
    continue;
  stash:
    memcpy(c->stash, buf + i, left);
    c->stash_len = (int)left;
    return done;
  }
  return done;
}

static void on_frames(conn_t *c, const uint8_t *buf, size_t n) {
  int done;
  if (c->stash_len > 0) {
    /* An incomplete header from the last read: complete it first. */
    uint8_t tmp[32];
    size_t take = n < 16 ? n : 16;
    memcpy(tmp, c->stash, c->stash_len);
    memcpy(tmp + c->stash_len, buf, take);
    size_t have = c->stash_len + take;
    int old = c->stash_len;
    c->stash_len = 0;
    /* Parse just the header part; where it ends tells how much of buf was used. */
    size_t header = 99;
    if (have >= 2) {
      uint8_t b1 = tmp[1];
      header = ((b1 & 0x80) ? 6 : 2) + ((b1 & 127) == 126 ? 2 : (b1 & 127) == 127 ? 8 : 0);
    }
    if (have < header) {
      memcpy(c->stash, tmp, have);
      c->stash_len = (int)have;
      return;
    }
    done = parse(c, tmp, header);
    size_t used = header - old;
    done += parse(c, buf + used, n - used);
  } else {
    done = parse(c, buf, n);
  }
  if (done == 0) return;
  double t = now_us();
  int cap = inflight;
  for (int i = 0; i < done && c->queued > 0; i++) {
    if (measuring) {
      double us = t - c->times[c->first];
      uint32_t b = us < 0 ? 0 : us >= HIST_SIZE - 1 ? HIST_SIZE - 1 : (uint32_t)us;
      hist[b]++;
      samples++;
    }
    c->first = (c->first + 1) % cap;
    c->queued--;
  }
  if (measuring) received += (uint64_t)done;
  if (!stopping) send_frames(c, done, t);
}

static int percentile(double p) {
  if (samples == 0) return -1;
  uint64_t rank = (uint64_t)((p / 100.0) * samples + 0.999999);
  uint64_t seen = 0;
  for (int i = 0; i < HIST_SIZE; i++) {
    seen += hist[i];
    if (seen >= rank) return i;
  }
  return HIST_SIZE - 1;
}

static int open_conn(const char *host, int port, int raw, uint8_t *rbuf, conn_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &addr.sin_addr);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  if (!raw) {
    char req[512];
    int len = snprintf(req, sizeof req,
                       "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       host, port);
    if (write(fd, req, len) != len) return -1;
    size_t have = 0;
    char *end = NULL;
    while (!end) {
      ssize_t n = read(fd, rbuf + have, 16384 - have - 1);
      if (n <= 0) return -1;
      have += (size_t)n;
      rbuf[have] = 0;
      end = strstr((char *)rbuf, "\r\n\r\n");
      if (!end && have >= 16383) return -1;
    }
    if (strncmp((char *)rbuf, "HTTP/1.1 101", 12) != 0) {
      fprintf(stderr, "Handshake failed: %.60s\n", rbuf);
      return -1;
    }
    size_t head = (size_t)(end + 4 - (char *)rbuf);
    if (have > head) parse(c, rbuf + head, have - head);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

/* Runs the event loop until `until` (µs, monotonic). */
static int loop(double until, uint8_t *rbuf, int *errors) {
  struct epoll_event events[256];
  for (;;) {
    double left = until - now_us();
    if (left <= 0) return 0;
    int n = epoll_wait(epfd, events, 256, (int)(left / 1000) + 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    for (int e = 0; e < n; e++) {
      conn_t *c = events[e].data.ptr;
      if (c->fd < 0) continue;
      if (events[e].events & EPOLLOUT) {
        int r = push_out(c);
        if (r == 0) set_out(c, 0);
      }
      if (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t got = read(c->fd, rbuf, READ_SIZE);
        if (got > 0) on_frames(c, rbuf, (size_t)got);
        else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
          if (!stopping) (*errors)++;
          epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
          close(c->fd);
          c->fd = -1;
        }
      }
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr,
            "usage: loadgen HOST PORT RAW CONNECTIONS INFLIGHT SIZE WARMUP_MS DURATION_MS "
            "SERVER_PID\n");
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]), raw = atoi(argv[3]), nconns = atoi(argv[4]);
  inflight = atoi(argv[5]) > 0 ? atoi(argv[5]) : 1;
  size_t size = (size_t)atol(argv[6]);
  double warmup = atof(argv[7]) * 1000, duration = atof(argv[8]) * 1000;
  int server_pid = atoi(argv[9]);

  /* One masked binary frame, repeated `inflight` times. */
  size_t extra = size < 126 ? 0 : size < 65536 ? 2 : 8;
  size_t header = 2 + extra + 4;
  frame_len = header + size;
  batch = malloc(frame_len * inflight);
  uint8_t *frame = batch;
  static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
  frame[0] = 0x82;
  if (extra == 0) frame[1] = 0x80 | (uint8_t)size;
  else if (extra == 2) {
    frame[1] = 0x80 | 126;
    frame[2] = (uint8_t)(size >> 8);
    frame[3] = (uint8_t)size;
  } else {
    frame[1] = 0x80 | 127;
    for (int j = 0; j < 8; j++) frame[2 + j] = (uint8_t)((uint64_t)size >> (56 - 8 * j));
  }
  memcpy(frame + header - 4, mask, 4);
  for (size_t i = 0; i < size; i++) frame[header + i] = (uint8_t)(i & 0xff) ^ mask[i & 3];
  for (int i = 1; i < inflight; i++) memcpy(batch + i * frame_len, frame, frame_len);

  hist = calloc(HIST_SIZE, sizeof *hist);
  uint8_t *rbuf = malloc(READ_SIZE + 1);
  epfd = epoll_create1(0);
  conn_t *conns = calloc(nconns, sizeof *conns);
  int errors = 0;
  for (int i = 0; i < nconns; i++) {
    conns[i].times = calloc(inflight, sizeof(double));
    if (open_conn(host, port, raw, rbuf, &conns[i]) < 0) {
      fprintf(stderr, "Cannot open connection %d to %s:%d: %s\n", i, host, port, strerror(errno));
      return 1;
    }
  }
  double start = now_us();
  for (int i = 0; i < nconns; i++) send_frames(&conns[i], inflight, start);
  if (loop(start + warmup, rbuf, &errors) < 0) return 1;

  errors = 0;
  double cpu0 = self_cpu(), srv0 = server_pid > 0 ? proc_cpu(server_pid) : 0,
         mach0 = machine_cpu();
  double t0 = now_us();
  measuring = 1;
  if (loop(t0 + duration, rbuf, &errors) < 0) return 1;
  measuring = 0;
  double seconds = (now_us() - t0) / 1e6;
  double load_cpu = 100 * (self_cpu() - cpu0) / seconds;
  double server_cpu = server_pid > 0 ? 100 * (proc_cpu(server_pid) - srv0) / seconds : -1;
  double other = 100 * (machine_cpu() - mach0) / seconds - load_cpu - (server_cpu > 0 ? server_cpu : 0);
  if (other < 0) other = 0;
  stopping = 1;
  int open = 0;
  for (int i = 0; i < nconns; i++) {
    if (conns[i].fd >= 0) {
      open++;
      close(conns[i].fd);
    }
  }
  int p50 = percentile(50), p99 = percentile(99);
  char p50s[32] = "null", p99s[32] = "null", srvs[32];
  if (p50 >= 0) snprintf(p50s, sizeof p50s, "%d", p50);
  if (p99 >= 0) snprintf(p99s, sizeof p99s, "%d", p99);
  if (server_cpu < 0) snprintf(srvs, sizeof srvs, "null");
  else snprintf(srvs, sizeof srvs, "%.3f", server_cpu);
  printf("{\"messagesPerSec\":%.3f,\"mbPerSec\":%.3f,\"p50us\":%s,\"p99us\":%s,"
         "\"serverCpu\":%s,\"loadCpu\":%.3f,\"otherCpu\":%.3f,\"messages\":%llu,"
         "\"seconds\":%.6f,\"connections\":%d,\"errors\":%d,\"loadgen\":\"c\"}\n",
         received / seconds, received * (double)size / seconds / 1e6, p50s, p99s, srvs, load_cpu,
         other, (unsigned long long)received, seconds, open, errors);
  return 0;
}
