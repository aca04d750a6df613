/*
 * locktool: a tiny lock driver for the floatlock client VM (MIT licence).
 *
 * Opens FILE once and runs a sequence of steps on that descriptor, printing
 * one parseable line per step:
 *
 *   BEGIN  <label>.<n> op=<op> ...            (before a step that may block)
 *   RESULT <label>.<n> <rc> op=<op> ... err=<ERRNAME> ms=<elapsed>
 *
 * rc is 0 on success, otherwise the errno value.  Steps:
 *
 *   lock:T:START:LEN    fcntl F_SETLK   T = r (shared) | w (exclusive) | u (unlock)
 *   lockw:T:START:LEN   fcntl F_SETLKW  (blocking; bounded by -T)
 *   test:T:START:LEN    fcntl F_GETLK   prints conflict=none or the holder
 *   flock:sh|ex|un      flock(2) with LOCK_NB
 *   flockw:sh|ex        flock(2) blocking (bounded by -T)
 *   sleep:SECONDS       sleep (fractions allowed)
 *   until:PATH[:SECS]   wait until PATH exists (rc ETIMEDOUT after SECS)
 *   touch:PATH          create PATH (to signal another process)
 *   close | open        close / reopen FILE (close drops this process' POSIX locks)
 *   echo:TEXT           print "ECHO <label> TEXT"
 *
 * Options: -n LABEL (default "lt"), -o ro|rw|wo (default rw, created if missing),
 *          -T SECONDS  time limit for each blocking step (rc EINTR when it fires).
 * Exit status: 0 if every step succeeded, 1 if one failed, 2 usage, 3 open failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *label = "lt";
static const char *path;
static int open_flags = O_RDWR | O_CREAT;
static unsigned block_limit; /* seconds, 0 = none */
static int fd = -1;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static const char *errname(int e)
{
	switch (e) {
	case 0: return "OK";
	case EAGAIN: return "EAGAIN";
	case EACCES: return "EACCES";
	case EINTR: return "EINTR";
	case EDEADLK: return "EDEADLK";
	case ENOLCK: return "ENOLCK";
	case EBADF: return "EBADF";
	case EINVAL: return "EINVAL";
	case EIO: return "EIO";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ENOENT: return "ENOENT";
	case EPERM: return "EPERM";
	default: return "E?";
	}
}

static void on_alarm(int sig)
{
	(void)sig;
}

static void arm(void)
{
	if (block_limit)
		alarm(block_limit);
}

static void disarm(void)
{
	alarm(0);
}

static int parse_type(const char *s, short *type)
{
	if (!strcmp(s, "r")) *type = F_RDLCK;
	else if (!strcmp(s, "w")) *type = F_WRLCK;
	else if (!strcmp(s, "u")) *type = F_UNLCK;
	else return -1;
	return 0;
}

static const char *type_name(short t)
{
	return t == F_RDLCK ? "r" : t == F_WRLCK ? "w" : t == F_UNLCK ? "u" : "?";
}

static void usage(void)
{
	fprintf(stderr,
		"usage: locktool [-n LABEL] [-o ro|rw|wo] [-T SECS] FILE STEP...\n"
		"steps: lock:T:S:L lockw:T:S:L test:T:S:L flock:sh|ex|un flockw:sh|ex\n"
		"       sleep:SECS until:PATH[:SECS] touch:PATH close open echo:TEXT\n");
	exit(2);
}

static int do_open(void)
{
	fd = open(path, open_flags, 0666);
	return fd < 0 ? errno : 0;
}

/* Runs one step; returns rc (0 or errno) and prints its RESULT line. */
static int step(int n, char *spec)
{
	char buf[512];
	char *op = spec, *args = strchr(spec, ':');
	char extra[256] = "";
	double t0;
	int rc = 0;

	if (args)
		*args++ = '\0';
	t0 = now_ms();

	if (!strcmp(op, "lock") || !strcmp(op, "lockw") || !strcmp(op, "test")) {
		char *ts, *ss, *ls;
		struct flock fl;
		int cmd;

		memset(&fl, 0, sizeof fl);
		ts = args ? strtok(args, ":") : NULL;
		ss = ts ? strtok(NULL, ":") : NULL;
		ls = ss ? strtok(NULL, ":") : NULL;
		if (!ls || parse_type(ts, &fl.l_type)) {
			fprintf(stderr, "locktool: bad step %s\n", op);
			usage();
		}
		fl.l_whence = SEEK_SET;
		fl.l_start = strtoll(ss, NULL, 0);
		fl.l_len = strtoll(ls, NULL, 0);
		snprintf(buf, sizeof buf, "op=%s type=%s start=%lld len=%lld", op, ts,
			 (long long)fl.l_start, (long long)fl.l_len);
		cmd = !strcmp(op, "lock") ? F_SETLK : !strcmp(op, "lockw") ? F_SETLKW : F_GETLK;
		if (cmd == F_SETLKW) {
			printf("BEGIN %s.%d %s\n", label, n, buf);
			fflush(stdout);
			arm();
		}
		if (fcntl(fd, cmd, &fl) < 0)
			rc = errno;
		disarm();
		if (cmd == F_GETLK && rc == 0) {
			if (fl.l_type == F_UNLCK)
				snprintf(extra, sizeof extra, " conflict=none");
			else
				snprintf(extra, sizeof extra,
					 " conflict=%s cstart=%lld clen=%lld cpid=%ld",
					 type_name(fl.l_type), (long long)fl.l_start,
					 (long long)fl.l_len, (long)fl.l_pid);
		}
	} else if (!strcmp(op, "flock") || !strcmp(op, "flockw")) {
		int how;

		if (!args)
			usage();
		if (!strcmp(args, "sh")) how = LOCK_SH;
		else if (!strcmp(args, "ex")) how = LOCK_EX;
		else if (!strcmp(args, "un")) how = LOCK_UN;
		else usage();
		snprintf(buf, sizeof buf, "op=%s mode=%s", op, args);
		if (!strcmp(op, "flock")) {
			how |= LOCK_NB;
		} else {
			printf("BEGIN %s.%d %s\n", label, n, buf);
			fflush(stdout);
			arm();
		}
		if (flock(fd, how) < 0)
			rc = errno;
		disarm();
	} else if (!strcmp(op, "sleep")) {
		double s = args ? strtod(args, NULL) : 0;
		struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };

		snprintf(buf, sizeof buf, "op=sleep secs=%g", s);
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	} else if (!strcmp(op, "until")) {
		char *p = args ? strtok(args, ":") : NULL;
		char *lim = p ? strtok(NULL, ":") : NULL;
		double limit = lim ? strtod(lim, NULL) * 1000.0 : -1;
		struct stat st;

		if (!p)
			usage();
		snprintf(buf, sizeof buf, "op=until path=%s", p);
		printf("BEGIN %s.%d %s\n", label, n, buf);
		fflush(stdout);
		while (stat(p, &st) < 0) {
			struct timespec ts = { 0, 50 * 1000 * 1000 };

			if (limit >= 0 && now_ms() - t0 >= limit) {
				rc = ETIMEDOUT;
				break;
			}
			nanosleep(&ts, NULL);
		}
	} else if (!strcmp(op, "touch")) {
		int tfd;

		if (!args)
			usage();
		snprintf(buf, sizeof buf, "op=touch path=%s", args);
		tfd = open(args, O_WRONLY | O_CREAT, 0666);
		if (tfd < 0)
			rc = errno;
		else
			close(tfd);
	} else if (!strcmp(op, "close")) {
		snprintf(buf, sizeof buf, "op=close");
		if (close(fd) < 0)
			rc = errno;
		fd = -1;
	} else if (!strcmp(op, "open")) {
		snprintf(buf, sizeof buf, "op=open");
		rc = do_open();
	} else if (!strcmp(op, "echo")) {
		printf("ECHO %s %s\n", label, args ? args : "");
		snprintf(buf, sizeof buf, "op=echo");
	} else {
		fprintf(stderr, "locktool: unknown step %s\n", op);
		usage();
	}

	printf("RESULT %s.%d %d %s%s err=%s ms=%.1f\n", label, n, rc, buf, extra, errname(rc),
	       now_ms() - t0);
	fflush(stdout);
	return rc;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	int c, i, failed = 0;

	while ((c = getopt(argc, argv, "n:o:T:")) != -1) {
		switch (c) {
		case 'n':
			label = optarg;
			break;
		case 'o':
			if (!strcmp(optarg, "ro")) open_flags = O_RDONLY;
			else if (!strcmp(optarg, "wo")) open_flags = O_WRONLY | O_CREAT;
			else if (!strcmp(optarg, "rw")) open_flags = O_RDWR | O_CREAT;
			else usage();
			break;
		case 'T':
			block_limit = (unsigned)strtoul(optarg, NULL, 0);
			break;
		default:
			usage();
		}
	}
	if (optind >= argc)
		usage();
	path = argv[optind++];

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm; /* no SA_RESTART: a blocked lock returns EINTR */
	sigaction(SIGALRM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if ((c = do_open()) != 0) {
		printf("RESULT %s.open %d op=open path=%s err=%s ms=0.0\n", label, c, path,
		       errname(c));
		return 3;
	}
	for (i = optind; i < argc; i++)
		if (step(i - optind + 1, argv[i]) != 0)
			failed = 1;
	return failed;
}
