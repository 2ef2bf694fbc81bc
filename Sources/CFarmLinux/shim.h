#ifndef CFARMLINUX_SHIM_H
#define CFARMLINUX_SHIM_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

// Linux process starting that Glibc and posix_spawn do not offer: a parent-death signal.

// glibc declares it only under _GNU_SOURCE, which Swift's Glibc module is not built with.
extern int pipe2(int descriptors[2], int flags);

// A pipe whose ends no child started meanwhile by another thread inherits.
static inline int farm_pipe(int descriptors[2]) { return pipe2(descriptors, O_CLOEXEC); }

static inline void farm_close_from(int first, int last) {
    if (first > last) return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, (unsigned)last, 0) == 0) return;
#endif
    for (int fd = first; fd <= last && fd < 65536; fd++) close(fd);
}

// Starts `path` with `argv` and `envp`, in `directory` when not NULL, its fds 0, 1 and 2 being
// `in`, `out` and `err`, and no other descriptor of farm's. The child gets SIGKILL when the thread
// that called this exits (PR_SET_PDEATHSIG follows the creating thread, not the process), so the
// caller must wait for the child on the same thread. Its signal mask is emptied and every
// disposition reset to default: both survive exec, and the Swift test runner blocks SIGTERM.
// Returns the pid, or -errno when fork, chdir or exec failed (the child is then reaped).
static inline pid_t farm_spawn(const char *path, char *const argv[], char *const envp[], const char *directory,
                               int in, int out, int err) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    if (report[1] < 3) {
        // fds 0-2 are about to be replaced in the child: keep the report channel above them.
        int moved = fcntl(report[1], F_DUPFD_CLOEXEC, 3);
        int saved = errno;
        close(report[1]);
        if (moved < 0) { close(report[0]); return -saved; }
        report[1] = moved;
    }
    sigset_t all, previous;
    sigfillset(&all);
    // No handler of farm's may run in the child between fork and exec.
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int error = 0;
        struct sigaction standard = {0};
        standard.sa_handler = SIG_DFL;
        for (int signal = 1; signal < NSIG; signal++) {
            if (signal != SIGKILL && signal != SIGSTOP) sigaction(signal, &standard, NULL);
        }
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) error = errno;
        // farm died before the signal was armed: nobody would kill this child later.
        if (!error && getppid() != parent) _exit(127);
        if (!error && (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)) error = errno;
        if (!error && directory && chdir(directory) != 0) error = errno;
        if (!error) {
            farm_close_from(3, report[1] - 1);
            farm_close_from(report[1] + 1, 0x7fffffff);
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            execve(path, argv, envp);
            error = errno;
        }
        while (write(report[1], &error, sizeof error) < 0 && errno == EINTR) {}
        _exit(127);
    }
    int forkError = pid < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    close(report[1]);
    if (pid < 0) { close(report[0]); return -forkError; }
    int childError = 0;
    ssize_t got;
    do { got = read(report[0], &childError, sizeof childError); } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof childError) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -childError;
    }
    return pid;
}

static inline int farm_wait_status_exited(int status) { return WIFEXITED(status); }
static inline int farm_wait_status_code(int status) { return WEXITSTATUS(status); }
static inline int farm_wait_status_signaled(int status) { return WIFSIGNALED(status); }
static inline int farm_wait_status_signal(int status) { return WTERMSIG(status); }

#endif
