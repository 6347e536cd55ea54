/* The floor under the WebSocket fan-out (BENCHMARKS.md, "WebSocket fan-out
 * against the kernel's floor"): the least any server can do on this machine
 * to get one small message to N loopback TCP clients in another process.
 * The server writes MSG bytes (the send time in the first 8) to each of its
 * N accepted sockets with plain write(2), from THREADS threads, ROUNDS times
 * half a second apart; the client epolls all N and records arrival minus
 * send time. No framing, no runtime, no parsing: what is left is the
 * kernel's loopback TCP path and the wake-ups.
 *   cc -O2 -pthread -o ws-floor scripts/ws-floor.c
 *   ws-floor server N [THREADS] [MSG]   (prints its port, then the sweeps)
 *   ws-floor client N PORT [MSG]        (prints p50/p99/max)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ROUNDS = 10 };
static int n_fds, msg_len = 120, *fds;

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

struct part { int lo, hi; long long ts; };

static void *sweep(void *p) {
  struct part *a = p;
  char buf[4096];
  memset(buf, 'x', sizeof buf);
  memcpy(buf, &a->ts, 8);
  for (int i = a->lo; i < a->hi; i++)
    if (write(fds[i], buf, msg_len) != msg_len) perror("write");
  return NULL;
}

static int server(int threads) {
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4096) || getsockname(l, (void *)&a, &len)) {
    perror("listen");
    return 1;
  }
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  fds = malloc(n_fds * sizeof *fds);
  for (int i = 0; i < n_fds; i++) {
    fds[i] = accept(l, NULL, NULL);
    setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  sleep(1);
  for (int r = 0; r < ROUNDS; r++) {
    pthread_t th[64];
    struct part parts[64];
    long long ts = now_ns();
    for (int t = 0; t < threads; t++) {
      parts[t] = (struct part){n_fds * t / threads, n_fds * (t + 1) / threads, ts};
      pthread_create(&th[t], NULL, sweep, &parts[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    fprintf(stderr, "round %d: %d writes in %.1f ms\n", r, n_fds, (now_ns() - ts) / 1e6);
    usleep(500000);
  }
  sleep(1);
  return 0;
}

static int client(int port) {
  int ep = epoll_create1(0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  for (int i = 0; i < n_fds; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (void *)&a, sizeof a)) {
      perror("connect");
      return 1;
    }
    fcntl(s, F_SETFL, O_NONBLOCK);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
  }
  long long *lat = malloc(sizeof *lat * n_fds * ROUNDS);
  long n = 0;
  struct epoll_event ev[512];
  char buf[8192];
  while (n < (long)n_fds * ROUNDS) {
    int k = epoll_wait(ep, ev, 512, 5000);
    if (k <= 0) break;
    long long t = now_ns();
    for (int i = 0; i < k; i++) {
      int m = read(ev[i].data.fd, buf, sizeof buf);
      for (int o = 0; o + msg_len <= m; o += msg_len) {
        long long ts;
        memcpy(&ts, buf + o, 8);
        lat[n++] = t - ts;
      }
    }
  }
  if (n == 0) return 1;
  qsort(lat, n, sizeof *lat, cmp);
  printf("messages %ld of %ld: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", n, (long)n_fds * ROUNDS, lat[n / 2] / 1e6,
         lat[n * 99 / 100] / 1e6, lat[n - 1] / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ws-floor server N [THREADS] [MSG] | ws-floor client N PORT [MSG]\n");
    return 2;
  }
  n_fds = atoi(argv[2]);
  if (!strcmp(argv[1], "server")) {
    if (argc > 4) msg_len = atoi(argv[4]);
    return server(argc > 3 ? atoi(argv[3]) : 1);
  }
  if (argc > 4) msg_len = atoi(argv[4]);
  return client(argc > 3 ? atoi(argv[3]) : 0);
}
