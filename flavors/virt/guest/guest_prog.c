/* clustercore-guest: the program of the project's real test guest (flavors/virt/guest).
 *
 * Reads its wishes from the kernel command line (/proc/cmdline), one role per word:
 *   counter=FILE  append "N\n" to /data/FILE once a second (fsync + sync), continuing
 *                 from the last complete line already in the file (no gap, no duplicate)
 *   dirty=MIB     rewrite one byte per 4 KiB page of MIB MiB, pass after pass, checking
 *                 that every page still holds the previous pass's value (lost pages)
 *   burn=1        burn one CPU
 * and reports on the serial console, every line starting with "clustercore-guest: ".
 * Built with gcc -O2 -static; each role runs in a process of its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define DATA "/data/"

static void say(const char *fmt, ...) {
    char line[256];
    int n = snprintf(line, sizeof line, "clustercore-guest: ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(1, line, n); /* one write per line: lines of roles never mix */
    (void)ignored;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The last complete value in the file; a torn last line (power cut) is cut off. */
static long last_value(const char *path) {
    int fd = open(path, O_RDWR);
    if (fd < 0) return 0;
    struct stat st;
    long last = 0;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        char *buf = malloc(st.st_size + 1);
        ssize_t got = buf ? pread(fd, buf, st.st_size, 0) : -1;
        if (got > 0) {
            ssize_t end = got;
            while (end > 0 && buf[end - 1] != '\n') end--;
            if (end < got) {
                say("counter: cutting a torn last line (%ld bytes)", (long)(got - end));
                if (ftruncate(fd, end) != 0) say("counter: truncate failed: %s", strerror(errno));
                fsync(fd);
            }
            ssize_t start = end > 0 ? end - 1 : 0;
            while (start > 0 && buf[start - 1] != '\n') start--;
            buf[end] = '\0';
            if (end > 0) last = strtol(buf + start, NULL, 10);
        }
        free(buf);
    }
    close(fd);
    return last;
}

static void counter(const char *name) {
    char path[256];
    snprintf(path, sizeof path, DATA "%s", name);
    long n = last_value(path);
    say("counter %s continues after %ld", name, n);
    double next = now();
    for (;;) {
        n++;
        char line[32];
        int len = snprintf(line, sizeof line, "%ld\n", n);
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd < 0 || write(fd, line, len) != len || fsync(fd) != 0) {
            say("counter: write to %s failed: %s", path, strerror(errno));
            if (fd >= 0) close(fd);
            n--;
        } else {
            close(fd);
            sync();
            say("counter %ld", n);
        }
        next += 1.0;
        double wait = next - now();
        if (wait < 0) { next = now(); wait = 0; }
        usleep((useconds_t)(wait * 1e6));
    }
}

static void dirty(long mib) {
    size_t pages = (size_t)mib * (1024 * 1024 / PAGE);
    unsigned char *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { say("dirty: cannot map %ld MiB: %s", mib, strerror(errno)); return; }
    say("dirty %ld MiB (%zu pages)", mib, pages);
    unsigned long total_lost = 0;
    double last_report = 0;
    for (unsigned long pass = 1;; pass++) {
        unsigned long lost = 0;
        for (size_t i = 0; i < pages; i++) {
            unsigned char want = (unsigned char)(pass - 1 + i);
            unsigned char *p = mem + i * PAGE;
            if (pass > 1 && *p != want) lost++;
            *p = (unsigned char)(pass + i);
        }
        total_lost += lost;
        double t = now();
        if (lost || t - last_report >= 1.0 || pass <= 2) {
            say("dirty pass %lu lost %lu total lost %lu", pass, lost, total_lost);
            last_report = t;
        }
    }
}

static void burn(void) {
    say("burn cpu");
    volatile unsigned long x = 0;
    for (;;) x++;
}

static void start(const char *role, void (*run)(const char *), const char *arg) {
    pid_t pid = fork();
    if (pid == 0) { run(arg); _exit(0); }
    if (pid < 0) say("%s: fork failed: %s", role, strerror(errno));
}

static void run_counter(const char *arg) { counter(arg); }
static void run_dirty(const char *arg) { dirty(strtol(arg, NULL, 10)); }
static void run_burn(const char *arg) { (void)arg; burn(); }

int main(void) {
    char cmdline[4096] = "";
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) {
        ssize_t got = read(fd, cmdline, sizeof cmdline - 1);
        cmdline[got > 0 ? got : 0] = '\0';
        close(fd);
    }
    say("up, cmdline: %.*s", (int)strcspn(cmdline, "\n"), cmdline);
    int roles = 0;
    for (char *save, *word = strtok_r(cmdline, " \n", &save); word; word = strtok_r(NULL, " \n", &save)) {
        if (strncmp(word, "counter=", 8) == 0 && word[8] && !strchr(word + 8, '/')) {
            start("counter", run_counter, word + 8); roles++;
        } else if (strncmp(word, "dirty=", 6) == 0 && strtol(word + 6, NULL, 10) > 0) {
            start("dirty", run_dirty, word + 6); roles++;
        } else if (strcmp(word, "burn=1") == 0) {
            start("burn", run_burn, ""); roles++;
        }
    }
    if (!roles) say("idle");
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) pause();
        else say("role process %d ended (status %d)", (int)pid, status);
    }
}
