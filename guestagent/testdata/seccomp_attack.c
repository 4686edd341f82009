/*
 * seccomp_attack: tries, from a 64-bit static binary, the escapes a jail
 * box's seccomp profile must refuse, and prints one line per probe:
 *
 *   <probe>\t<result>\t<detail>
 *
 * result is "allowed" when the call succeeded (the attack worked),
 * "refused" when it failed (detail: errno name, or the signal that killed
 * the probe, e.g. SIGSYS from SECCOMP_RET_KILL_PROCESS), and for control
 * probes (names starting with "control_") "allowed" is what must happen.
 * Each probe runs in its own forked child so a killed probe ends only
 * itself. The last line is "done".
 *
 * usage: seccomp_attack TARGET_PID SCRATCH_DIR
 *        seccomp_attack --abi-check
 *   TARGET_PID   the process to attach to (the box's agent: 1)
 *   SCRATCH_DIR  an existing directory to try to mount a tmpfs on
 *   --abi-check  print "i386 yes" or "i386 no": whether this kernel runs
 *                i386 calls at all (some disable IA-32 emulation; int $0x80
 *                then raises SIGSEGV before any seccomp filter sees it)
 *
 * Built by the Go tests with: gcc -static -O1 -o seccomp_attack seccomp_attack.c -lpthread
 * The binary is static and non-PIE, so its data lies below 4 GiB where the
 * i386 ABI (which truncates pointers to 32 bits) can reach it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef __x86_64__
#error "seccomp_attack probes the i386 and x32 ABIs of x86-64"
#endif

/* i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl). */
#define I386_GETPID 20
#define I386_MOUNT 21
#define I386_PTRACE 26
#define I386_UMOUNT2 52
#define I386_KEYCTL 288
#define I386_UNSHARE 310
#define X32_SYSCALL_BIT 0x40000000

#define PTRACE_ATTACH_ 16
#define PTRACE_DETACH_ 17
#define KEYCTL_GET_KEYRING_ID_ 0
#define KEY_SPEC_USER_KEYRING_ (-4)
#define NETLINK_ROUTE_ 0
#define AF_VSOCK_ 40

static pid_t target;
static char scratch[4096]; /* in .bss: below 4 GiB */
static const char fstype[] = "tmpfs";
static const char source[] = "none";

/* i386 int $0x80 from 64-bit code: the result is in eax, -errno on failure. */
static long int80(long nr, long a, long b, long c, long d, long e)
{
	long ret;
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
			 : "memory", "r8", "r9", "r10", "r11");
	return (int)ret; /* eax, sign-extended */
}

/* Probe results: 0 the call succeeded, >0 the errno it failed with. */
static int from_ret(long r) { return r < 0 ? (int)-r : 0; }
static int from_libc(long r) { return r < 0 ? errno : 0; }

/* Undo a successful attach (only reached when the attack worked) so the
 * target is not left stopped; detach through the ABI that attached. */
static void undo_attach(int i386)
{
	int st;
	waitpid(target, &st, __WALL);
	if (i386)
		int80(I386_PTRACE, PTRACE_DETACH_, target, 0, 0, 0);
	else
		syscall(SYS_ptrace, PTRACE_DETACH_, target, 0, 0);
	kill(target, SIGCONT);
}

static int i386_unshare(void) { return from_ret(int80(I386_UNSHARE, CLONE_NEWUSER, 0, 0, 0, 0)); }

static int i386_mount(void)
{
	int r = from_ret(int80(I386_MOUNT, (long)(uintptr_t)source, (long)(uintptr_t)scratch,
			       (long)(uintptr_t)fstype, 0, 0));
	if (r == 0)
		int80(I386_UMOUNT2, (long)(uintptr_t)scratch, 2 /* MNT_DETACH */, 0, 0, 0);
	return r;
}

static int i386_keyctl(void)
{
	return from_ret(int80(I386_KEYCTL, KEYCTL_GET_KEYRING_ID_, KEY_SPEC_USER_KEYRING_, 1, 0, 0));
}

static int i386_ptrace_attach(void)
{
	int r = from_ret(int80(I386_PTRACE, PTRACE_ATTACH_, target, 0, 0, 0));
	if (r == 0)
		undo_attach(1);
	return r;
}

static int x32_unshare(void) { return from_libc(syscall(X32_SYSCALL_BIT | SYS_unshare, CLONE_NEWUSER)); }
static int x32_getpid(void) { return from_libc(syscall(X32_SYSCALL_BIT | SYS_getpid)); }

static int io_uring_setup(void)
{
	char params[120]; /* struct io_uring_params */
	memset(params, 0, sizeof params);
	return from_libc(syscall(SYS_io_uring_setup, 4, params));
}

static int unshare_newuser(void) { return from_libc(unshare(CLONE_NEWUSER)); }

static int clone3_newuser(void)
{
	struct clone_args args;
	memset(&args, 0, sizeof args);
	args.flags = CLONE_NEWUSER;
	args.exit_signal = SIGCHLD;
	long pid = syscall(SYS_clone3, &args, sizeof args);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	return from_libc(pid);
}

static int mount64(void)
{
	int r = from_libc(syscall(SYS_mount, source, scratch, fstype, 0, NULL));
	if (r == 0)
		syscall(SYS_umount2, scratch, 2);
	return r;
}

static int keyctl64(void)
{
	return from_libc(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID_, KEY_SPEC_USER_KEYRING_, 1));
}

static int ptrace_attach(void)
{
	int r = from_libc(syscall(SYS_ptrace, PTRACE_ATTACH_, target, 0, 0));
	if (r == 0)
		undo_attach(0);
	return r;
}

static int process_vm_readv_target(void)
{
	char buf[8];
	struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
	long n = process_vm_readv(target, &local, 1, &remote, 1, 0);
	/* EFAULT or EIO means the access check passed: only the address was bad. */
	if (n < 0 && (errno == EFAULT || errno == EIO))
		return 0;
	return from_libc(n);
}

static int proc_mem_open(void)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", (int)target);
	int fd = open(path, O_RDONLY);
	if (fd >= 0)
		close(fd);
	return from_libc(fd);
}

static int proc_fd_open(void)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd/0", (int)target);
	int fd = open(path, O_RDONLY | O_NONBLOCK);
	if (fd >= 0)
		close(fd);
	return from_libc(fd);
}

static int pidfd_getfd_target(void)
{
	int pfd = syscall(SYS_pidfd_open, target, 0);
	if (pfd < 0)
		return errno;
	int r = from_libc(syscall(SYS_pidfd_getfd, pfd, 0, 0));
	close(pfd);
	return r;
}

static int socket_vsock(void)
{
	int fd = socket(AF_VSOCK_, SOCK_STREAM, 0);
	if (fd >= 0)
		close(fd);
	return from_libc(fd);
}

/* Controls: a normal program needs these. */
static void *thread_main(void *arg) { return arg; }

static int control_thread(void)
{
	pthread_t th;
	int r = pthread_create(&th, NULL, thread_main, NULL); /* glibc >= 2.34: clone3 */
	if (r != 0)
		return r;
	return pthread_join(th, NULL);
}

static int control_fork(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	if (pid < 0)
		return errno;
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : ECHILD;
}

static int control_socket_netlink(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE_);
	if (fd >= 0)
		close(fd);
	return from_libc(fd);
}

static int control_unknown_is_enosys(void)
{
	/* A number no kernel has: must fail with ENOSYS (reported as refused
	 * ENOSYS; the Go test checks the errno), never kill. */
	long r = syscall(1023);
	return r < 0 && errno == ENOSYS ? 0 : (r < 0 ? errno : EINVAL);
}

struct probe {
	const char *name;
	int (*fn)(void);
};

static const struct probe probes[] = {
	{"i386_unshare_newuser", i386_unshare},
	{"i386_mount", i386_mount},
	{"i386_keyctl", i386_keyctl},
	{"i386_ptrace_attach", i386_ptrace_attach},
	{"x32_unshare_newuser", x32_unshare},
	{"x32_getpid", x32_getpid},
	{"io_uring_setup", io_uring_setup},
	{"unshare_newuser", unshare_newuser},
	{"clone3_newuser", clone3_newuser},
	{"mount", mount64},
	{"keyctl", keyctl64},
	{"ptrace_attach", ptrace_attach},
	{"process_vm_readv", process_vm_readv_target},
	{"proc_mem_open", proc_mem_open},
	{"proc_fd_open", proc_fd_open},
	{"pidfd_getfd", pidfd_getfd_target},
	{"socket_vsock", socket_vsock},
	{"control_thread", control_thread},
	{"control_fork", control_fork},
	{"control_socket_netlink", control_socket_netlink},
	{"control_unknown_is_enosys", control_unknown_is_enosys},
};

static int abi_check(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(int80(I386_GETPID, 0, 0, 0, 0, 0) == getpid() ? 0 : 1);
	int st;
	waitpid(pid, &st, 0);
	printf("i386 %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "yes" : "no");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--abi-check") == 0)
		return abi_check();
	if (argc != 3) {
		fprintf(stderr, "usage: %s TARGET_PID SCRATCH_DIR\n", argv[0]);
		return 2;
	}
	target = (pid_t)atoi(argv[1]);
	snprintf(scratch, sizeof scratch, "%s", argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			int e = probes[i].fn();
			_exit(e > 254 ? 254 : e);
		}
		int st;
		if (waitpid(pid, &st, 0) < 0) {
			perror("waitpid");
			return 1;
		}
		if (WIFSIGNALED(st))
			printf("%s\trefused\tkilled by SIG%s\n", probes[i].name, sigabbrev_np(WTERMSIG(st)) ?: "?");
		else if (WEXITSTATUS(st) == 0)
			printf("%s\tallowed\t-\n", probes[i].name);
		else
			printf("%s\trefused\t%s\n", probes[i].name, strerrorname_np(WEXITSTATUS(st)) ?: "errno");
	}
	printf("done\n");
	return 0;
}
