/*
 * A test double of libkrun (NOT a VM). Built by krun_test.go into a
 * libkrun.so.1 and loaded through the same dlopen path as the real library.
 * It exports the symbols boxlite-mcp calls, enforces the invariants the
 * real libkrun enforces (ctx ids, listen paths that must not exist, disk
 * formats, a non-NULL envp, call order), logs every call to $FAKEKRUN_LOG,
 * and in krun_start_enter execs the guest agent ($FAKEKRUN_AGENT) serving
 * the mapped socket path, so the whole engine path runs end to end.
 * Built with -DOLD_LIBKRUN it lacks the 1.17 symbols.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXCTX 16
struct ctx {
	bool used, vm_config, implicit_vsock_disabled, vsock_added, exec_set;
	char socket[108];
	char exec[4096];
	char *env[256];
};
static struct ctx ctxs[MAXCTX];
static int next_ctx;

static void logf_(const char *fmt, ...) {
	const char *p = getenv("FAKEKRUN_LOG");
	if (!p) return;
	FILE *f = fopen(p, "a");
	if (!f) return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

static struct ctx *get(uint32_t id) {
	if (id >= MAXCTX || !ctxs[id].used) return NULL;
	return &ctxs[id];
}

int32_t krun_set_log_level(uint32_t level) { logf_("krun_set_log_level %u", level); return level > 5 ? -EINVAL : 0; }

int32_t krun_create_ctx(void) {
	if (next_ctx >= MAXCTX) return -ENOMEM;
	ctxs[next_ctx].used = true;
	logf_("krun_create_ctx -> %d", next_ctx);
	return next_ctx++;
}

int32_t krun_set_vm_config(uint32_t id, uint8_t cpus, uint32_t mib) {
	struct ctx *c = get(id);
	logf_("krun_set_vm_config %u %u %u", id, cpus, mib);
	if (!c || cpus == 0 || mib == 0) return -EINVAL;
	c->vm_config = true;
	return 0;
}

int32_t krun_set_console_output(uint32_t id, const char *path) {
	logf_("krun_set_console_output %u %s", id, path);
	return get(id) && path ? 0 : -EINVAL;
}

int32_t krun_add_disk2(uint32_t id, const char *block, const char *path, uint32_t fmt, bool ro) {
	logf_("krun_add_disk2 %u %s %s fmt=%u ro=%d", id, block, path, fmt, ro);
	if (!get(id) || fmt > 2) return -EINVAL;
	if (access(path, R_OK) != 0) return -ENOENT;
	return 0;
}

int32_t krun_set_root_disk_remount(uint32_t id, const char *dev, const char *fstype, const char *opts) {
	logf_("krun_set_root_disk_remount %u %s %s %s", id, dev, fstype, opts ? opts : "(null)");
	return get(id) && dev ? 0 : -EINVAL;
}

#ifndef OLD_LIBKRUN
int32_t krun_disable_implicit_vsock(uint32_t id) {
	struct ctx *c = get(id);
	logf_("krun_disable_implicit_vsock %u", id);
	if (!c) return -EINVAL;
	c->implicit_vsock_disabled = true;
	return 0;
}

int32_t krun_add_vsock(uint32_t id, uint32_t tsi) {
	struct ctx *c = get(id);
	logf_("krun_add_vsock %u tsi=%u", id, tsi);
	if (!c) return -EINVAL;
	if (!c->implicit_vsock_disabled || c->vsock_added) return -EEXIST; /* only one vsock device */
	c->vsock_added = true;
	return 0;
}
#endif

/*
 * The box's network: like libkrun, connect to the stream socket at path (the
 * network helper's link socket) and keep the connection; the descriptor
 * survives the exec of the agent below, so the link lives as long as this
 * "VM". Never with TSI: the implicit vsock must have been replaced first.
 */
int32_t krun_add_net_unixstream(uint32_t id, const char *path, int fd, uint8_t *const mac, uint32_t features, uint32_t flags) {
	struct ctx *c = get(id);
	if (!c || !mac || (!path && fd < 0)) return -EINVAL;
	int s = fd;
	if (path) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
			logf_("krun_add_net_unixstream %u %s connect failed errno=%d", id, path, errno);
			return -ECONNREFUSED;
		}
	}
	logf_("krun_add_net_unixstream %u %s mac=%02x:%02x:%02x:%02x:%02x:%02x features=%u flags=%u tsi_off=%d connected=1", id,
	      path ? path : "(fd)", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], features, flags,
	      c->implicit_vsock_disabled && c->vsock_added);
	return 0;
}

int32_t krun_add_vsock_port2(uint32_t id, uint32_t port, const char *path, bool listen) {
	struct ctx *c = get(id);
	struct stat st;
	logf_("krun_add_vsock_port2 %u %u %s listen=%d", id, port, path, listen);
	if (!c) return -EINVAL;
	if (c->implicit_vsock_disabled && !c->vsock_added) return -ENODEV; /* vsock disabled */
	if (listen && stat(path, &st) == 0) return -EEXIST;              /* libkrun binds it itself */
	snprintf(c->socket, sizeof c->socket, "%s", path);
	return 0;
}

int32_t krun_set_exec(uint32_t id, const char *path, char *const argv[], char *const envp[]) {
	struct ctx *c = get(id);
	logf_("krun_set_exec %u %s envp=%s", id, path, envp ? "set" : "NULL");
	if (!c || !path) return -EINVAL;
	if (!envp) return -EINVAL; /* NULL would copy the host's environment */
	snprintf(c->exec, sizeof c->exec, "%s", path);
	int n = 0;
	for (; envp[n] && n < 255; n++) {
		c->env[n] = strdup(envp[n]);
		logf_("  env %s", envp[n]);
	}
	c->env[n] = NULL;
	for (int i = 0; argv && argv[i]; i++) logf_("  arg %s", argv[i]);
	c->exec_set = true;
	return 0;
}

int32_t krun_set_workdir(uint32_t id, const char *dir) { logf_("krun_set_workdir %u %s", id, dir); return get(id) ? 0 : -EINVAL; }

int32_t krun_set_rlimits(uint32_t id, const char *const r[]) {
	logf_("krun_set_rlimits %u", id);
	for (int i = 0; r && r[i]; i++) {
		if (!strchr(r[i], '=') || !strchr(r[i], ':')) return -EINVAL;
		logf_("  rlimit %s", r[i]);
	}
	return get(id) ? 0 : -EINVAL;
}

int32_t krun_start_enter(uint32_t id) {
	struct ctx *c = get(id);
	logf_("krun_start_enter %u", id);
	if (!c || !c->vm_config || !c->exec_set || !c->socket[0]) return -EINVAL;
	const char *agent = getenv("FAKEKRUN_AGENT");
	if (!agent) return -ENOENT; /* the real one: libkrunfw.so.5 missing */
	char listen[128];
	snprintf(listen, sizeof listen, "unix:%s", c->socket);
	char *argv[] = {"boxlite-guest", "--listen", listen, NULL};
	execve(agent, argv, c->env); /* takes over the process, as the real one does */
	return -errno;
}
