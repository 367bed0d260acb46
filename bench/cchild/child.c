/*
 * child: the benchmark's bridge with no runtime of its own, and the C
 * floor that supervises it (see docs/performance.md).
 *
 * As a bridge (the fake bridge's flags, the few the benchmark uses):
 *
 *   child [-stamp FILE] [-after MS] [-exit CODE] [-hang]
 *         [-spew BYTES [-line LEN]]
 *
 * It appends "start NS PID realtime" to FILE first thing, and
 * "exit NS PID realtime" just before exiting, NS read on CLOCK_REALTIME
 * after the file is open, so only one write separates the stamp from the
 * exit. -spew writes BYTES of LEN-byte lines and then "spew done BYTES".
 *
 * As the floor:
 *
 *   child -floor N -notes FILE -- ARGV...
 *
 * fork, exec ARGV (stdin, stdout and stderr on /dev/null) and waitpid for
 * it, N+1 times in a row; then it writes one "NS PID" line per exit to
 * FILE, NS the CLOCK_REALTIME instant waitpid returned.
 *
 *   child -jsonlog
 *
 * the floor of the sidecar's default log: it reads stdin and writes each
 * line to stdout as the sidecar's JSON record of a bridge line, escaped
 * as it escapes, the time formatted once per read, one write per read (or
 * per 256 KiB).
 *
 *   child -jsonlog -threads
 *   child -jsonlog -copy FILE
 *
 * the same records on two threads, one formatting and one writing, as the
 * sidecar spreads the work; with -copy, a third writes each read's bytes
 * unchanged to FILE too, the work of the Hermes default (bridge.log and
 * the log).
 *
 *   child -rawcopy
 *
 * cat that also finds each line and looks at its first byte: the work of
 * --bridge-output raw.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void stamp(const char *file, const char *what)
{
	char line[96];
	int fd, n;

	if (!file)
		return;
	fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		perror("stamp");
		exit(3);
	}
	n = snprintf(line, sizeof line, "%s %lld %d realtime\n", what, now_ns(), (int)getpid());
	if (write(fd, line, n) != n) {
		perror("stamp");
		exit(3);
	}
	close(fd);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void spew(long long bytes, int len)
{
	enum { BUF = 64 << 10 };
	static char buf[BUF];
	size_t per = BUF / (size_t)len, fill = per * (size_t)len, i;
	long long done = 0;
	char tail[64];
	int n;

	for (i = 0; i < fill; i++)
		buf[i] = (i + 1) % (size_t)len == 0 ? '\n' : 'y';
	while (done < bytes) {
		/* Whole lines, like the Go fake bridge: the last one may overshoot. */
		long long left = bytes - done;
		size_t n = left >= (long long)fill ? fill : ((size_t)(left + len - 1) / (size_t)len) * (size_t)len;
		if (write_all(1, buf, n) < 0) {
			perror("spew");
			exit(3);
		}
		done += (long long)n;
	}
	n = snprintf(tail, sizeof tail, "spew done %lld\n", bytes);
	if (write_all(1, tail, (size_t)n) < 0)
		exit(3);
}

static int floor_run(int rounds, const char *notes, char **argv)
{
	long long *at = calloc((size_t)rounds + 1, sizeof *at);
	int *pids = calloc((size_t)rounds + 1, sizeof *pids);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	FILE *f;
	int i;

	if (!at || !pids || null < 0) {
		perror("floor");
		return 1;
	}
	for (i = 0; i <= rounds; i++) {
		int status;
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			execv(argv[0], argv);
			_exit(127);
		}
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		at[i] = now_ns();
		pids[i] = (int)pid;
	}
	f = fopen(notes, "w");
	if (!f) {
		perror(notes);
		return 1;
	}
	for (i = 0; i <= rounds; i++)
		fprintf(f, "%lld %d\n", at[i], pids[i]);
	return fclose(f) == 0 ? 0 : 1;
}

/* plain8: none of the eight bytes in x needs escaping in a JSON string:
 * each is printable ASCII other than '"' and '\\' (the sidecar's test). */
static int plain8(uint64_t x)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	uint64_t quote = x ^ (ones * '"'), slash = x ^ (ones * '\\');
	uint64_t control = (x - ones * 0x20) & ~x;
	uint64_t special = ((quote - ones) & ~quote) | ((slash - ones) & ~slash);
	return ((control | special | x) & highs) == 0;
}

/* plain32: plain8 of four words, one branch for 32 bytes, as the
 * sidecar tests 32 bytes per branch. */
static int plain32(const char *s)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	uint64_t acc = 0;
	int k;

	for (k = 0; k < 4; k++) {
		uint64_t x, quote, slash;
		memcpy(&x, s + 8 * k, 8);
		quote = x ^ (ones * '"');
		slash = x ^ (ones * '\\');
		acc |= ((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash) | x;
	}
	return (acc & highs) == 0;
}

static char *escape(char *o, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	while (i + 32 <= n && plain32(s + i)) {
		memcpy(o, s + i, 32);
		o += 32;
		i += 32;
	}
	while (i < n) {
		uint64_t w;
		if (i + 8 <= n && (memcpy(&w, s + i, 8), plain8(w))) {
			memcpy(o, s + i, 8);
			o += 8;
			i += 8;
			continue;
		}
		unsigned char c = (unsigned char)s[i++];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*o++ = (char)c; /* bytes of 0x80 and up pass: the bench's lines are ASCII */
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"': case '\\': *o++ = (char)c; break;
		case '\n': *o++ = 'n'; break;
		case '\r': *o++ = 'r'; break;
		case '\t': *o++ = 't'; break;
		default:
			*o++ = 'u'; *o++ = '0'; *o++ = '0';
			*o++ = hex[c >> 4]; *o++ = hex[c & 0xf];
		}
	}
	return o;
}

/* record appends the record of one line, cut at LINE bytes as the sidecar
 * cuts a line at its limit, to out at *used. The prefix and suffix are
 * copied whole (PREFIX and SUFFIX bytes, a fixed size the compiler
 * inlines, not a libc call per record); out has room past the record. */
enum { LINE = 4096, PREFIX = 96, SUFFIX = 64 };
static void record(char *out, size_t *used, const char *prefix, int np, const char *s, size_t len, const char *suffix, int ns)
{
	if (len > 0 && s[len - 1] == '\r')
		len--; /* the sidecar's lines end before "\r\n" */
	if (len > LINE)
		len = LINE;
	memcpy(out + *used, prefix, PREFIX);
	char *o = escape(out + *used + np, s, len);
	memcpy(o, suffix, SUFFIX);
	*used = (size_t)(o - out) + (size_t)ns;
}

static int jsonlog(void)
{
	enum { IN = 256 << 10, OUT = 256 << 10 };
	/* A record is at most the prefix, six bytes for each of LINE bytes and
	 * the suffix; one is added while used < OUT. */
	static char in[IN], out[OUT + 8 * LINE];
	char prefix[PREFIX] = {0}, suffix[SUFFIX] = {0};
	size_t have = 0, used = 0;
	int np = 0, ns, skipping = 0; /* skipping: the rest of a line cut at IN bytes */

	ns = snprintf(suffix, sizeof suffix, "\",\"bridge\":\"stdout\",\"pid\":%d}\n", (int)getpid());
	for (;;) {
		ssize_t n = read(0, in + have, IN - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* An unended last line is still a line, as the sidecar has it. */
			if (have > 0 && !skipping) {
				record(out, &used, prefix, np, in, have, suffix, ns);
				if (write_all(1, out, used) < 0)
					return 3;
			}
			break;
		}
		have += (size_t)n;
		{
			struct timespec ts;
			struct tm tm;
			clock_gettime(CLOCK_REALTIME, &ts);
			gmtime_r(&ts.tv_sec, &tm);
			np = snprintf(prefix, sizeof prefix, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ\",\"level\":\"INFO\",\"msg\":\"",
				tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
		}
		char *p = in, *end = in + have, *nl;
		while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			if (skipping)
				skipping = 0;
			else
				record(out, &used, prefix, np, p, (size_t)(nl - p), suffix, ns);
			if (used >= OUT) {
				if (write_all(1, out, used) < 0)
					return 3;
				used = 0;
			}
			p = nl + 1;
		}
		have = (size_t)(end - p);
		if (skipping) {
			have = 0;
		} else if (have == IN) {
			/* A line longer than the buffer: its head is the record, the
			 * rest is skipped up to its end. */
			record(out, &used, prefix, np, p, have, suffix, ns);
			skipping = 1;
			have = 0;
		}
		memmove(in, p, have);
		if (used > 0) {
			if (write_all(1, out, used) < 0)
				return 3;
			used = 0;
		}
	}
	return 0;
}

/*
 * The two-thread floors. A queue hands whole buffers from the thread that
 * fills them to the one that writes them, and the written buffers back: the
 * least that spreads the work over two cores as the sidecar does (it
 * formats in one goroutine while another writes).
 */
enum { NBUF = 8 };

struct buf {
	char *p;
	size_t off, n; /* what to write: p[off, off+n) */
};

struct queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct buf *b[NBUF + 1];
	int head, count;
};

static void queue_init(struct queue *q)
{
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	q->head = q->count = 0;
}

/* put adds b, NULL for the end; a queue holds every buffer of its pool. */
static void put(struct queue *q, struct buf *b)
{
	pthread_mutex_lock(&q->mu);
	q->b[(q->head + q->count++) % (NBUF + 1)] = b;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static struct buf *get(struct queue *q)
{
	struct buf *b;

	pthread_mutex_lock(&q->mu);
	while (q->count == 0)
		pthread_cond_wait(&q->cv, &q->mu);
	b = q->b[q->head];
	q->head = (q->head + 1) % (NBUF + 1);
	q->count--;
	pthread_mutex_unlock(&q->mu);
	return b;
}

/* A writer thread writes what comes in full to fd and gives it back in
 * free, until the end; a failed write ends the program. */
struct writer {
	pthread_t t;
	int fd;
	struct queue full, free;
};

static void *write_loop(void *arg)
{
	struct writer *w = arg;
	struct buf *b;

	while ((b = get(&w->full)) != NULL) {
		if (write_all(w->fd, b->p + b->off, b->n) < 0) {
			perror("write");
			exit(3);
		}
		put(&w->free, b);
	}
	return NULL;
}

static void writer_start(struct writer *w, int fd, size_t size)
{
	int i;

	w->fd = fd;
	queue_init(&w->full);
	queue_init(&w->free);
	for (i = 0; i < NBUF; i++) {
		struct buf *b = calloc(1, sizeof *b);
		if (!b || !(b->p = malloc(size))) {
			perror("malloc");
			exit(3);
		}
		put(&w->free, b);
	}
	if (pthread_create(&w->t, NULL, write_loop, w) != 0) {
		perror("pthread_create");
		exit(3);
	}
}

static void writer_end(struct writer *w)
{
	put(&w->full, NULL);
	pthread_join(w->t, NULL);
}

/*
 * jsonlog2 is -jsonlog on two threads: this one reads and formats, a
 * writer writes each read's records. With copyfd >= 0 (-copy FILE) each
 * read's bytes also go to that file, as the sidecar's Hermes default puts
 * the bridge's lines in bridge.log beside the log: a third thread writes
 * them straight from the buffer they were read into, with no copy.
 */
static int jsonlog2(int copyfd)
{
	enum { IN = 256 << 10, OUT = 256 << 10 };
	struct writer log, copy;
	struct buf *in, *out;
	char prefix[PREFIX] = {0}, suffix[SUFFIX] = {0};
	size_t have = 0;
	int np = 0, ns, skipping = 0;

	writer_start(&log, 1, OUT + 8 * LINE);
	if (copyfd >= 0) {
		writer_start(&copy, copyfd, IN);
		in = get(&copy.free);
	} else {
		in = calloc(1, sizeof *in);
		if (!in || !(in->p = malloc(IN))) {
			perror("malloc");
			return 3;
		}
	}
	out = get(&log.free);
	out->n = 0;
	ns = snprintf(suffix, sizeof suffix, "\",\"bridge\":\"stdout\",\"pid\":%d}\n", (int)getpid());
	for (;;) {
		ssize_t n = read(0, in->p + have, IN - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (have > 0 && !skipping)
				record(out->p, &out->n, prefix, np, in->p, have, suffix, ns);
			break;
		}
		{
			struct timespec ts;
			struct tm tm;
			clock_gettime(CLOCK_REALTIME, &ts);
			gmtime_r(&ts.tv_sec, &tm);
			np = snprintf(prefix, sizeof prefix, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ\",\"level\":\"INFO\",\"msg\":\"",
				tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
		}
		size_t fresh = have; /* where this read's bytes begin */
		have += (size_t)n;
		char *p = in->p, *end = in->p + have, *nl;
		while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			if (skipping)
				skipping = 0;
			else
				record(out->p, &out->n, prefix, np, p, (size_t)(nl - p), suffix, ns);
			if (out->n >= OUT) {
				put(&log.full, out);
				out = get(&log.free);
				out->n = 0;
			}
			p = nl + 1;
		}
		have = (size_t)(end - p);
		if (skipping) {
			have = 0;
		} else if (have == IN) {
			record(out->p, &out->n, prefix, np, p, have, suffix, ns);
			skipping = 1;
			have = 0;
		}
		if (out->n > 0) {
			put(&log.full, out);
			out = get(&log.free);
			out->n = 0;
		}
		if (copyfd >= 0) {
			/* The read's own bytes go to the copy; the unended line
			 * moves to the next buffer's start. */
			struct buf *next = get(&copy.free);
			memcpy(next->p, p, have);
			in->off = fresh;
			in->n = (size_t)n;
			put(&copy.full, in);
			in = next;
		} else {
			memmove(in->p, p, have);
		}
	}
	if (out->n > 0)
		put(&log.full, out);
	writer_end(&log);
	if (copyfd >= 0)
		writer_end(&copy);
	return 0;
}

/*
 * rawcopy is the floor of --bridge-output raw: cat that also finds every
 * line, as the sidecar must to keep pairing codes out (it looks at each
 * line's first byte, and at the whole line only when that byte may start
 * one) and to keep the last lines for an exit's record. The lines here
 * never start a code, so each read is written on whole.
 */
static int rawcopy(void)
{
	enum { IN = 256 << 10 };
	static char in[IN];
	static unsigned char maystart[256];
	size_t lines = 0, suspect = 0;

	maystart['{'] = maystart[0xe2] = maystart[' '] = 1;
	for (;;) {
		ssize_t n = read(0, in, IN);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		char *p = in, *end = in + n, *nl;
		while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			lines++;
			suspect += maystart[(unsigned char)*p];
			p = nl + 1;
		}
		if (write_all(1, in, (size_t)n) < 0)
			return 3;
	}
	return suspect > lines ? 4 : 0; /* never: keeps the scan from being optimised away */
}

static void usage(void)
{
	fputs("usage: child [-stamp FILE] [-after MS] [-exit CODE] [-hang] [-spew BYTES [-line LEN]]\n"
	      "       child -floor N -notes FILE -- ARGV...\n"
	      "       child -jsonlog [-threads] [-copy FILE]\n"
	      "       child -rawcopy\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *stampfile = NULL, *notes = NULL;
	long after = 0, code = -1, line = 100, rounds = -1;
	long long spewbytes = 0;
	int hang = 0, i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-jsonlog")) {
			if (i + 1 == argc)
				return jsonlog();
			if (!strcmp(argv[i + 1], "-threads") && i + 2 == argc)
				return jsonlog2(-1);
			if (!strcmp(argv[i + 1], "-copy") && i + 3 == argc) {
				int fd = open(argv[i + 2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
				if (fd < 0) {
					perror(argv[i + 2]);
					return 3;
				}
				return jsonlog2(fd);
			}
			usage();
		}
		if (!strcmp(a, "-rawcopy"))
			return rawcopy();
		if (!strcmp(a, "-hang")) {
			hang = 1;
			continue;
		}
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "-stamp"))
			stampfile = v;
		else if (!strcmp(a, "-after"))
			after = strtol(v, NULL, 10);
		else if (!strcmp(a, "-exit"))
			code = strtol(v, NULL, 10);
		else if (!strcmp(a, "-spew"))
			spewbytes = strtoll(v, NULL, 10);
		else if (!strcmp(a, "-line"))
			line = strtol(v, NULL, 10);
		else if (!strcmp(a, "-floor"))
			rounds = strtol(v, NULL, 10);
		else if (!strcmp(a, "-notes"))
			notes = v;
		else
			usage();
	}
	if (rounds >= 0) {
		if (!notes || i >= argc)
			usage();
		return floor_run((int)rounds, notes, argv + i);
	}
	stamp(stampfile, "start");
	if (spewbytes > 0) {
		if (line < 1 || line > 4096)
			usage();
		spew(spewbytes, (int)line);
	}
	if (after > 0) {
		struct timespec ts = {after / 1000, (after % 1000) * 1000000L};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (code >= 0) {
		stamp(stampfile, "exit");
		_exit((int)code);
	}
	if (hang)
		for (;;)
			pause();
	return 0;
}
